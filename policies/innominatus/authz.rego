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
#       "resource":   {"type": "deployment", "name": "checkout", "environment": "dev", "application": "checkout"}
#     }
#
# Policy authors: the tables below (`role_permissions`, `audit_writer_services`,
# `specs_delegated_permissions`) are the knobs you normally edit. Rules further down
# only interpret them. Run `opa test policies/ -v` after every change and extend
# tests/fixtures/policy_decisions.yaml, which is replayed against both the OPA
# sidecar and the embedded (regopy) engine. See docs/policy-authoring.md.
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
	"teams.create",
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
