# innominatus authorization policy.
#
# Every mutating gRPC RPC is sent here before it runs. The platform asks for
# `data.innominatus.authz.decision` and receives
#
#     {"allow": <bool>, "reasons": [<string>, ...]}
#
# `reasons` explains a deny in words an operator can act on; when the request is
# allowed it is empty. Anything this file does not explicitly allow is denied.
#
# Input document (fixed contract, produced by the platform):
#
#     {
#       "subject":    {"type": "user" | "service", "name": "users/alice" | "services/specs",
#                      "username": "alice", "roles": ["developer"], "teams": ["teams/payments"]},
#       "peer":       {"service": "gateway", "spiffe_id": "spiffe://innominatus.local/service/gateway"},
#       "method":     "/innominatus.specs.v1.SpecsService/CreateDeployment",
#       "permission": "deployments.create",
#       "request":    { ... the request message as proto3 JSON ... },
#       "resource":   {"type": "deployment", "name": "checkout", "environment": "dev", "application": "checkout"},
#       "facts":      { ... only for RPCs whose service registered a facts provider, see below ... }
#     }
#
# `facts` carries what a decision needs that the request does not: the service gathers it
# inside the request's transaction just before asking (Runtime.register_policy_facts). When
# the service cannot gather it the request is refused before the policy is asked. Today:
#
#   CreateDeployment, RollbackDeployment (specs):
#       {"team": "payments",            # team owning the application ("" = no team)
#        "application": "checkout",
#        "application_new": true,       # no deployment recorded an owner for it yet
#        "usage":     {"applications": 5, "resources": 12},   # what the team holds now
#        "projected": {"applications": 6, "resources": 14}}   # ... and after this request
#     It is {} when the request is invalid (the service refuses it with its own error).
#
#   DeleteApplication (specs):
#       {"team": "payments",            # team owning the application ("" = no team, or unknown)
#        "application": "checkout"}
#     It is {} when the name is no application name (the service refuses it).
#
#   RunGoldenPath, StartRun (engine; the owner asked from specs):
#       {"team": "payments",            # team owning the run's application ("" = no team)
#        "application": "checkout",     # the run's application: the request's `application`,
#                                       # else its `app` param (defaults applied)
#        "applications": [              # every application the run names (its own first):
#          {"application": "checkout", "team": "payments"},
#          {"application": "ledger", "team": "billing"}]}   # e.g. an `app` param naming another
#     It is {} when the run names no application. When specs cannot say who owns one, the
#     request is refused before the policy is asked.
#
#   CancelRun, RetryRun, PauseRun, ResumeRun (engine; the run read from the engine's own
#   table, its owner asked from specs):
#       {"team": "payments",            # team owning the run's application ("" = no team)
#        "application": "checkout",     # the run's application (a child run without one: the
#                                       # first application up its chain of parent runs)
#        "applications": [{"application": "checkout", "team": "payments"}]}
#     It is {} when the run does not exist or names no application (the service answers an
#     unknown run with NOT_FOUND). When specs cannot say who owns it, the request is refused
#     before the policy is asked.
#
#   RevealResourceSecrets, CheckResource (resources):
#       {"resource": {"name": "resources/4f2a...",
#                     "team": "payments",       # bare name of the owning team ("" = no team):
#                                               # the claiming application's team; for a shared
#                                               # instance, its first claimer's
#                     "application": "checkout",  # the (first) claiming application
#                     "environment": "dev",
#                     "shared": false}}
#     A request naming a malformed or missing resource is refused before the policy is asked.
#
# Policy authors: the tables below (`role_permissions`, `audit_writer_services`,
# `specs_delegated_permissions`, `default_team_quota`, `team_quotas`, `team_permissions`,
# `team_application_permissions`, `team_exempt_roles`, `owned_resource_permissions`,
# `own_user_permissions`, `other_user_permissions`) are the knobs you normally edit. Rules further down only interpret them. Run `opa test policies/ -v`
# after every change and extend tests/fixtures/policy_decisions.yaml, which is replayed against
# both the OPA sidecar and the embedded (regopy) engine. See docs/policy-authoring.md.
#
# Portability note: this module is also evaluated in-process by rego-cpp (regopy).
# Stick to core Rego and common builtins (sprintf, concat, sort, count, object.get)
# and keep `with` to the unit tests. Known rego-cpp differences we work around:
#   * sprintf has no %q verb: write \"%s\" instead;
#   * a concat()/builtin result passed to sprintf's %s comes out with stray quotes:
#     build such strings with concat() alone;
#   * a one-line comprehension with `;` fails to parse: use a multi-line
#     `x contains y if { ... }` rule instead.
package innominatus.authz

import rego.v1

# ---------------------------------------------------------------------------
# Tables (edit these)
# ---------------------------------------------------------------------------

# Role -> permissions a *user* holding that role is granted.
# A user holding several roles gets the union. A role that is not a key here is
# unknown and grants nothing.
role_permissions := {
	"admin": {
		"users.create",
		"users.update",
		"teams.create",
		"teams.update",
		"apikeys.create",
		"apikeys.revoke",
		"deployments.create",
		"deployments.rollback",
		"applications.delete",
		"runs.start",
		"runs.cancel",
		"runs.retry",
		"runs.pause",
		"runs.resume",
		"runs.approve",
		"goldenpaths.run",
		"goldenpaths.publish",
		"resources.claim",
		"deployments.finalize",
		"resources.provision",
		"resources.deprovision",
		"resources.check",
		"resources.reveal",
		"resourcedefinitions.write",
		"environments.create",
		"environments.update",
	},
	"platform-engineer": {
		"teams.update",
		"apikeys.create",
		"apikeys.revoke",
		"deployments.create",
		"deployments.rollback",
		"applications.delete",
		"runs.start",
		"runs.cancel",
		"runs.retry",
		"runs.pause",
		"runs.resume",
		"runs.approve",
		"goldenpaths.run",
		"goldenpaths.publish",
		"resources.claim",
		"deployments.finalize",
		"resources.provision",
		"resources.deprovision",
		"resources.check",
		"resources.reveal",
		"resourcedefinitions.write",
		"environments.create",
		"environments.update",
	},
	"developer": {
		"deployments.create",
		"deployments.rollback",
		"applications.delete",
		"runs.start",
		"runs.cancel",
		"runs.retry",
		"runs.pause",
		"runs.resume",
		"goldenpaths.run",
		"resources.claim",
		"apikeys.create",
		"apikeys.revoke",
	},
	"viewer": set(),
}

# Every permission the platform checks. A request naming anything else is denied.
known_permissions := {
	"users.create",
	# Changing a user (UpdateUser): display name, roles, and disabling or enabling them. Granting
	# it grants every role, admin included, so keep it with admins.
	"users.update",
	"teams.create",
	# Changing a password (ChangePassword): every role on the user's own account (with the
	# current password, checked by identity); on another user's account only roles granting
	# "users.update" (see own_user_permissions and other_user_permissions).
	"users.password.change",
	# Changing a team's membership: AddTeamMember and RemoveTeamMember.
	"teams.update",
	"apikeys.create",
	"apikeys.revoke",
	"deployments.create",
	# Rolling an application back to an earlier deployment set (a new deployment on the engine).
	"deployments.rollback",
	# Removing an application from an environment: deprovisions its resources and removes it
	# from the environment's GitOps repository (the engine's undeploy workflow).
	"applications.delete",
	"runs.start",
	"runs.cancel",
	"runs.retry",
	"runs.pause",
	"runs.resume",
	# Deciding an approval gate. The engine adds a second check the policy cannot make
	# (its input does not carry the run's definition): the caller must also be one of the
	# gate's `approval.approvers` (a role, user or team), else NOT_AN_APPROVER. A gate that
	# names developers as approvers therefore also needs "runs.approve" in their row here.
	"runs.approve",
	"goldenpaths.run",
	"goldenpaths.publish",
	"resources.claim",
	# Rendering a deployment into its deployment set and committing it to GitOps (the
	# engine's deploy workflow, on its own behalf).
	"deployments.finalize",
	# Resource instances: provisioning and deprovisioning (the engine's `resource` steps),
	# health/drift checks, and revealing secret outputs in plaintext (--reveal).
	"resources.provision",
	"resources.deprovision",
	"resources.check",
	"resources.reveal",
	# Creating, updating and deleting resource definitions (how resources are provisioned).
	"resourcedefinitions.write",
	# Creating an environment with a type (development, staging, production). Deployments to a
	# production environment wait for an approval gate (runs.approve) in the deploy workflow.
	"environments.create",
	# Changing an environment's approval settings: whether its deployments wait at an approval
	# gate and who may decide it (role:, user: or team: approvers). The next deployment's gate
	# uses them; runs already started keep theirs.
	"environments.update",
	"audit.append",
}

# Platform services that may append to the audit chain. The caller must be one of
# these (mTLS peer) and must present itself as the subject `services/<peer>`.
audit_writer_services := {"specs", "engine", "resources", "identity", "audit"}

# Permissions the specs service exercises on behalf of the deploying user. When
# a user's request arrives through peer "specs" with one of these permissions, it
# is allowed for every role that may create deployments.
specs_delegated_permissions := {"resources.claim", "runs.start"}

# Permissions platform services exercise on their own behalf (subject `services/<peer>`):
# the engine runs the `resource` steps of workflows, checks resources and finalizes deployments.
service_permissions := {"engine": {"resources.provision", "resources.deprovision", "resources.check", "deployments.finalize"}}

# Team quotas: how many applications a team may own (those still deployed somewhere) and how
# many resources their latest deployments may hold, counted by specs (input.facts). A
# deployment that would take a team past a quota is denied; one that does not add to what the
# team holds (a redeploy) is allowed even when the team is already past it.
default_team_quota := {"applications": 25, "resources": 100}

# Per-team quotas, one line per team; a field left out takes default_team_quota's, e.g.
#     team_quotas["payments"] := {"applications": 50, "resources": 200}
# This is a partial object, so a site may keep its lines in a file of its own in this package
# (e.g. policies/innominatus/team_quotas.rego). A team listed twice with different values
# makes every decision fail, so mutations are refused (fail closed) until it is fixed.
# The line below only declares the table; it never adds an entry.
team_quotas["example-team"] := {"applications": 25, "resources": 100} if false

# Permissions whose requests deploy for a team: the user must belong to the team that owns
# (or will own) the application, and the team's quotas apply.
team_permissions := {"deployments.create", "deployments.rollback"}

# Permissions whose requests act on an existing application of a team, each with what it does
# (for the reason of a deny): removing it, starting a golden path or workflow run naming it
# (`undeploy-app` deprovisions the application's resources), or cancelling, retrying, pausing
# or resuming a run acting on it (a deployment's run included). The user must belong to the
# team owning the application (input.facts, from specs and the engine); an application no team
# owns stays open to every role granting the permission. No quota applies.
team_application_permissions := {
	"applications.delete": "remove it",
	"goldenpaths.run": "run golden paths against it",
	"runs.start": "start runs against it",
	"runs.cancel": "cancel runs of it",
	"runs.retry": "retry runs of it",
	"runs.pause": "pause runs of it",
	"runs.resume": "resume runs of it",
}

# Roles that may deploy for any team (quotas still apply), remove any team's application, run
# golden paths against it and operate on its runs.
team_exempt_roles := {"admin"}

# Role -> permissions a user holding that role is granted only on resource instances owned by
# one of the user's teams (input.facts.resource.team, from the resources service). Developers
# may reveal the secrets of their own team's resources; those of another team, and of
# resources no team owns, stay with the roles that grant the permission outright
# (role_permissions). Only permissions of RPCs whose facts carry `resource` belong here:
# resources.reveal and resources.check.
owned_resource_permissions := {"developer": {"resources.reveal"}}

# Role -> permissions a user holding that role is granted on their own user account only
# (input.resource.name is the user's own "users/<username>"): everyone may change their own
# password (identity also checks their current one).
own_user_permissions := {
	"admin": {"users.password.change"},
	"platform-engineer": {"users.password.change"},
	"developer": {"users.password.change"},
	"viewer": {"users.password.change"},
}

# Permission on a user account -> the permission a role must grant (role_permissions) to
# exercise it on another user's account. Resetting someone else's password, without their
# current one, takes over their account: it needs "users.update", like any other change to
# a user (admins). Identity also refuses it to non-admins.
other_user_permissions := {"users.password.change": "users.update"}

# ---------------------------------------------------------------------------
# Decision (the only document the platform reads)
# ---------------------------------------------------------------------------

default decision := {"allow": false, "reasons": ["default deny: no rule allowed this request"]}

decision := {"allow": true, "reasons": []} if allow

decision := {"allow": false, "reasons": deny_reasons} if not allow

# A request is allowed when some grant matches and nothing is malformed.
default allow := false

allow if {
	count(violations) == 0
	some _ in grants
}

# Human-readable reasons, sorted so the output is stable.
deny_reasons := sort(explanations) if {
	count(explanations) > 0
} else := [sprintf("no rule grants \"%s\" to %s", [permission, subject_label])]

explanations := violations | refusals

# ---------------------------------------------------------------------------
# Helpers over the input (tolerant of missing or mistyped fields)
# ---------------------------------------------------------------------------

subject := object.get(input, "subject", null)

subject_type := t if {
	t := subject.type
	is_string(t)
} else := ""

permission := p if {
	p := input.permission
	is_string(p)
} else := ""

peer_service := s if {
	s := input.peer.service
	is_string(s)
} else := ""

# How a user is named in reasons: the username, else the resource name.
username := u if {
	u := subject.username
	is_string(u)
	u != ""
} else := n if {
	n := subject.name
	is_string(n)
} else := "<unnamed>"

subject_label := sprintf("user \"%s\"", [username]) if {
	subject_type == "user"
} else := sprintf("service \"%s\"", [subject.name]) if {
	subject_type == "service"
} else := "the caller"

# The user's roles as a set (missing or malformed roles -> empty set).
user_roles contains role if {
	is_array(subject.roles)
	some role in subject.roles
	is_string(role)
}

# The user's teams as a set of "teams/<team>" names.
user_teams contains team if {
	is_array(subject.teams)
	some team in subject.teams
	is_string(team)
}

# input.facts, tolerant of its absence (requests of RPCs without a facts provider).
facts := f if {
	f := input.facts
	is_object(f)
} else := {}

# The team owning the application a team_permissions request deploys, or a
# team_application_permissions request acts on ("" = none or unknown).
fact_team := t if {
	t := facts.team
	is_string(t)
} else := ""

fact_application := a if {
	a := facts.application
	is_string(a)
} else := ""

# The resource instance a request names, from input.facts.resource (tolerant of its absence).
fact_resource := r if {
	r := facts.resource
	is_object(r)
} else := {}

# Its owning team's bare name ("" = no team, or no facts).
fact_resource_team := t if {
	t := fact_resource.team
	is_string(t)
} else := ""

# Whether the facts say who owns the instance at all ("" included: no team).
fact_resource_owner_known if is_string(fact_resource.team)

# How the instance is named in reasons.
fact_resource_name := n if {
	n := fact_resource.name
	is_string(n)
	n != ""
} else := n if {
	n := input.resource.name
	is_string(n)
	n != ""
} else := "the resource"

# The owned applications a request acts on, as [application, team] pairs: the application of
# the facts and, for runs, every application the run names (facts.applications).
owned_applications contains [fact_application, fact_team] if fact_team != ""

owned_applications contains [app, team] if {
	is_array(facts.applications)
	some entry in facts.applications
	team := entry.team
	is_string(team)
	team != ""
	app := entry.application # a team without a string name still binds (fail closed)
}

# The user is bound by the ownership of `team`: not a member, and no role exempts them.
outside_team(team) if {
	subject_type == "user"
	team != ""
	not sprintf("teams/%s", [team]) in user_teams
	count(user_roles & team_exempt_roles) == 0
}

# Permissions `role` grants only on resources of the user's own teams.
owned_permissions(role) := object.get(owned_resource_permissions, role, set())

# A team's quota of `kind` ("applications" or "resources").
team_quota(team, kind) := object.get(object.get(team_quotas, team, {}), kind, default_team_quota[kind])

# Permissions `role` grants only on the user's own account.
own_user_perms(role) := object.get(own_user_permissions, role, set())

# The request acts on the calling user's own account ("users/<username>", exactly).
own_user_account if {
	subject_type == "user"
	u := subject.username
	is_string(u)
	u != ""
	input.resource.name == sprintf("users/%s", [u])
}

# How the user account a request acts on is named in reasons.
target_user := n if {
	n := input.resource.name
	is_string(n)
	n != ""
} else := "the user the request names"

# Roles allowed to deploy, derived from the table above.
deploy_roles contains role if {
	some role, perms in role_permissions
	"deployments.create" in perms
}

# ---------------------------------------------------------------------------
# Grants: each yields a short label of the rule that allowed the request
# ---------------------------------------------------------------------------

grants contains sprintf("role \"%s\"", [role]) if {
	subject_type == "user"
	some role in user_roles
	permission in role_permissions[role]
}

grants contains sprintf("role \"%s\" on a resource of team \"%s\"", [role, fact_resource_team]) if {
	subject_type == "user"
	some role in user_roles
	permission in owned_permissions(role)
	fact_resource_team != ""
	sprintf("teams/%s", [fact_resource_team]) in user_teams
}

grants contains sprintf("role \"%s\" on the user's own account", [role]) if {
	own_user_account
	some role in user_roles
	permission in own_user_perms(role)
}

grants contains sprintf("role \"%s\" on another user's account (\"%s\")", [role, needed]) if {
	subject_type == "user"
	needed := other_user_permissions[permission]
	some role in user_roles
	needed in object.get(role_permissions, role, set())
}

grants contains "specs delegation" if {
	subject_type == "user"
	peer_service == "specs"
	permission in specs_delegated_permissions
	some role in user_roles
	role in deploy_roles
}

grants contains sprintf("service \"%s\"", [peer_service]) if {
	subject_type == "service"
	permission in service_permissions[peer_service]
	subject.name == sprintf("services/%s", [peer_service])
}

grants contains "audit writer" if {
	subject_type == "service"
	permission == "audit.append"
	peer_service in audit_writer_services
	subject.name == sprintf("services/%s", [peer_service])
}

# ---------------------------------------------------------------------------
# Violations: malformed or forbidden requests; any one of them forces a deny
# ---------------------------------------------------------------------------

violations contains "request has no subject (unauthenticated call)" if not is_object(subject)

violations contains sprintf("subject type \"%s\" is not recognised (expected \"user\" or \"service\")", [subject_type]) if {
	is_object(subject)
	not subject_type in {"user", "service"}
}

violations contains "request names no permission" if permission == ""

violations contains sprintf("permission \"%s\" is not a known permission", [permission]) if {
	permission != ""
	not permission in known_permissions
}

violations contains sprintf("user \"%s\" may never call \"audit.append\"; only platform services append to the audit log", [username]) if {
	subject_type == "user"
	permission == "audit.append"
}

violations contains sprintf("subject \"%s\" does not match peer service \"%s\" (expected \"services/%s\")", [subject.name, peer_service, peer_service]) if {
	subject_type == "service"
	subject.name != sprintf("services/%s", [peer_service])
}

# Team ownership and quotas (facts from the specs service; for runs, from the engine).
violations contains sprintf("user \"%s\" is not a member of team \"%s\", which owns (or would own) application \"%s\"; ask a member of the team to deploy it, ask an admin to add you to teams/%s, or deploy it under another application name for one of your teams", [username, fact_team, fact_application, fact_team]) if {
	permission in team_permissions
	outside_team(fact_team)
}

violations contains sprintf("user \"%s\" is not a member of team \"%s\", which owns application \"%s\"; only members of teams/%s may %s: ask one of them, or ask an admin to add you to the team", [username, team, app, team, action]) if {
	action := team_application_permissions[permission]
	some pair in owned_applications
	app := pair[0]
	team := pair[1]
	outside_team(team)
}

violations contains sprintf("team \"%s\" would own %d applications, above its quota of %d; remove an application (innominatus apps delete) or ask to raise team_quotas[\"%s\"]", [fact_team, projected, quota, fact_team]) if {
	permission in team_permissions
	fact_team != ""
	projected := facts.projected.applications
	quota := team_quota(fact_team, "applications")
	projected > quota
	projected > facts.usage.applications
}

violations contains sprintf("team \"%s\" would hold %d resources, above its quota of %d; declare fewer resources, remove an application (innominatus apps delete) or ask to raise team_quotas[\"%s\"]", [fact_team, projected, quota, fact_team]) if {
	permission in team_permissions
	fact_team != ""
	projected := facts.projected.resources
	quota := team_quota(fact_team, "resources")
	projected > quota
	projected > facts.usage.resources
}

# ---------------------------------------------------------------------------
# Refusals: why no grant matched (only reported when the request is denied)
# ---------------------------------------------------------------------------

refusals contains sprintf("user \"%s\" has no roles", [username]) if {
	subject_type == "user"
	count(user_roles) == 0
}

refusals contains sprintf("role \"%s\" of user \"%s\" is not a known role", [role, username]) if {
	subject_type == "user"
	some role in user_roles
	not role_permissions[role]
}

refusals contains sprintf("role \"%s\" of user \"%s\" does not grant \"%s\"", [role, username, permission]) if {
	subject_type == "user"
	permission != "audit.append"
	some role in user_roles
	perms := role_permissions[role]
	not permission in perms
	not permission in owned_permissions(role) # said below, with the owner
	not permission in own_user_perms(role) # said below, with whose account it is
}

# A role granting the permission only on its user's own account, asked for another user's.
refusals contains sprintf("role \"%s\" of user \"%s\" grants \"%s\" only on the user's own account (users/%s), not on %s; on another user's account it needs \"%s\", which no role of the user grants: ask an admin", [role, username, permission, username, target_user, needed]) if {
	subject_type == "user"
	not own_user_account
	some role in user_roles
	permission in own_user_perms(role)
	needed := other_user_permissions[permission]
	not needed in object.get(role_permissions, role, set())
}

# A role granting the permission only on its user's teams' resources: whose resource it is.
refusals contains sprintf("%s belongs to team \"%s\"; user \"%s\" is not a member of teams/%s, and role \"%s\" grants \"%s\" only on resources of the user's own teams: ask a member of teams/%s, an admin or a platform engineer", [fact_resource_name, fact_resource_team, username, fact_resource_team, role, permission, fact_resource_team]) if {
	subject_type == "user"
	some role in user_roles
	permission in owned_permissions(role)
	fact_resource_team != ""
	not sprintf("teams/%s", [fact_resource_team]) in user_teams
}

refusals contains sprintf("role \"%s\" of user \"%s\" does not grant \"%s\" on %s: no team owns it (its application has none), and the role grants it only on resources of the user's own teams; ask an admin or a platform engineer", [role, username, permission, fact_resource_name]) if {
	subject_type == "user"
	some role in user_roles
	permission in owned_permissions(role)
	fact_resource.team == ""
}

# Fail closed when the service sent no owner (a facts provider missing for the RPC).
refusals contains sprintf("role \"%s\" of user \"%s\" does not grant \"%s\" on %s: the policy was not told which team owns it (input.facts.resource.team), and the role grants it only on resources of the user's own teams", [role, username, permission, fact_resource_name]) if {
	subject_type == "user"
	some role in user_roles
	permission in owned_permissions(role)
	not fact_resource_owner_known
}

# (Built with concat rather than sprintf: regopy mis-renders a concat() result
# passed through sprintf's %s.)
refusals contains concat("", [
	"service peer \"", peer_service, "\" is not an audit writer (allowed: ",
	concat(", ", sort(audit_writer_services)), ")",
]) if {
	subject_type == "service"
	permission == "audit.append"
	not peer_service in audit_writer_services
}

refusals contains sprintf("service \"%s\" is not granted \"%s\"; services may only call \"audit.append\"", [subject.name, permission]) if {
	subject_type == "service"
	permission != ""
	permission != "audit.append"
	not permission in object.get(service_permissions, peer_service, set())
}
