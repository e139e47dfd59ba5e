# Unit tests for authz.rego. Run with: opa test policies/ -v
#
# These use `with input as ...` freely; that is fine under OPA. The embedded
# engine (regopy) never loads *_test.rego files. Cross-engine cases live in
# tests/fixtures/policy_decisions.yaml.
package innominatus.authz_test

import rego.v1

import data.innominatus.authz

# -- input builders ----------------------------------------------------------

user(username, roles) := {
	"type": "user",
	"name": sprintf("users/%s", [username]),
	"username": username,
	"roles": roles,
	"teams": ["teams/payments"],
}

service(name) := {
	"type": "service",
	"name": sprintf("services/%s", [name]),
	"username": "",
	"roles": [],
	"teams": [],
}

peer(name) := {"service": name, "spiffe_id": sprintf("spiffe://innominatus.local/service/%s", [name])}

req(subject, peer_name, permission) := {
	"subject": subject,
	"peer": peer(peer_name),
	"method": "/innominatus.specs.v1.SpecsService/CreateDeployment",
	"permission": permission,
	"request": {"name": "checkout"},
	"resource": {"type": "deployment", "name": "checkout", "environment": "dev", "application": "checkout"},
}

allowed(inp) if {
	d := authz.decision with input as inp
	d.allow == true
	d.reasons == []
}

denied_with(inp, reason) if {
	d := authz.decision with input as inp
	d.allow == false
	reason in d.reasons
}

denied(inp) if {
	d := authz.decision with input as inp
	d.allow == false
	count(d.reasons) > 0
}

user_permissions := authz.known_permissions - {"audit.append"}

# -- table sanity ------------------------------------------------------------

test_every_role_permission_is_known if {
	every _, perms in authz.role_permissions {
		every p in perms {
			p in authz.known_permissions
		}
	}
}

test_no_role_grants_audit_append if {
	every _, perms in authz.role_permissions {
		not "audit.append" in perms
	}
}

test_deploy_roles_derived_from_table if {
	authz.deploy_roles == {"admin", "platform-engineer", "developer"}
}

# -- admin -------------------------------------------------------------------

test_admin_may_do_every_user_permission if {
	every p in user_permissions {
		allowed(req(user("root", ["admin"]), "gateway", p))
	}
}

test_admin_may_not_append_audit if {
	denied_with(
		req(user("root", ["admin"]), "gateway", "audit.append"),
		`user "root" may never call "audit.append"; only platform services append to the audit log`,
	)
}

# -- platform-engineer ---------------------------------------------------------

test_platform_engineer_grants if {
	every p in {
		"teams.update", "apikeys.create", "apikeys.revoke", "deployments.create", "deployments.rollback", "runs.start",
		"resources.claim", "runs.cancel", "runs.retry", "runs.pause", "runs.resume", "runs.approve", "goldenpaths.run", "goldenpaths.publish",
		"resourcedefinitions.write",
	} {
		allowed(req(user("pat", ["platform-engineer"]), "gateway", p))
	}
}

test_platform_engineer_may_not_manage_users_or_create_teams if {
	denied_with(
		req(user("pat", ["platform-engineer"]), "gateway", "users.create"),
		`role "platform-engineer" of user "pat" does not grant "users.create"`,
	)
	denied_with(
		req(user("pat", ["platform-engineer"]), "gateway", "teams.create"),
		`role "platform-engineer" of user "pat" does not grant "teams.create"`,
	)
}

# -- developer -----------------------------------------------------------------

test_developer_grants if {
	every p in {
		"deployments.create", "deployments.rollback", "runs.start", "resources.claim", "apikeys.create",
		"apikeys.revoke", "runs.cancel", "runs.retry", "runs.pause", "runs.resume", "goldenpaths.run",
	} {
		allowed(req(user("alice", ["developer"]), "gateway", p))
	}
}

test_developer_denials if {
	every p in {"users.create", "teams.create", "teams.update", "runs.approve", "goldenpaths.publish", "resourcedefinitions.write"} {
		denied_with(
			req(user("alice", ["developer"]), "gateway", p),
			sprintf(`role "developer" of user "alice" does not grant "%s"`, [p]),
		)
	}
}

# -- viewer --------------------------------------------------------------------

# Except on their own account (changing their own password; see the user-account tests).
test_viewer_has_no_mutations if {
	every p in user_permissions - authz.own_user_permissions.viewer {
		denied_with(
			req(user("bob", ["viewer"]), "gateway", p),
			sprintf(`role "viewer" of user "bob" does not grant "%s"`, [p]),
		)
	}
}

test_viewer_may_not_roll_back if {
	denied_with(
		req(user("bob", ["viewer"]), "gateway", "deployments.rollback"),
		`role "viewer" of user "bob" does not grant "deployments.rollback"`,
	)
}

test_rollback_roles if {
	every r in {"admin", "platform-engineer", "developer"} {
		allowed(req(user("x", [r]), "gateway", "deployments.rollback"))
	}
}

test_viewer_plus_developer_gets_union if {
	allowed(req(user("carol", ["viewer", "developer"]), "gateway", "deployments.create"))
}

test_multi_role_denial_lists_every_role if {
	d := authz.decision with input as req(user("carol", ["viewer", "developer"]), "gateway", "users.create")
	d.allow == false
	d.reasons == [
		`role "developer" of user "carol" does not grant "users.create"`,
		`role "viewer" of user "carol" does not grant "users.create"`,
	]
}

# -- unknown / missing roles -----------------------------------------------------

test_unknown_role_denied if {
	denied_with(
		req(user("mallory", ["superuser"]), "gateway", "deployments.create"),
		`role "superuser" of user "mallory" is not a known role`,
	)
}

test_no_roles_denied if {
	denied_with(
		req(user("nobody", []), "gateway", "deployments.create"),
		`user "nobody" has no roles`,
	)
}

test_roles_not_a_list_denied if {
	inp := json.patch(req(user("odd", []), "gateway", "runs.start"), [{"op": "replace", "path": "/subject/roles", "value": "admin"}])
	denied_with(inp, `user "odd" has no roles`)
}

# -- service subjects and audit.append -------------------------------------------

test_audit_writers_may_append if {
	every s in {"specs", "engine", "resources", "identity", "audit"} {
		allowed(req(service(s), s, "audit.append"))
	}
}

test_gateway_may_not_append_audit if {
	denied_with(
		req(service("gateway"), "gateway", "audit.append"),
		`service peer "gateway" is not an audit writer (allowed: audit, engine, identity, resources, specs)`,
	)
}

test_service_name_must_match_peer if {
	denied_with(
		req(service("engine"), "specs", "audit.append"),
		`subject "services/engine" does not match peer service "specs" (expected "services/specs")`,
	)
}

test_service_without_peer_denied if {
	inp := object.remove(req(service("specs"), "specs", "audit.append"), {"peer"})
	denied(inp)
}

test_service_may_not_deploy if {
	denied_with(
		req(service("specs"), "specs", "deployments.create"),
		`service "services/specs" is not granted "deployments.create"; services may only call "audit.append"`,
	)
}

test_user_never_appends_audit_even_through_audit_writer_peer if {
	denied_with(
		req(user("alice", ["admin", "developer"]), "specs", "audit.append"),
		`user "alice" may never call "audit.append"; only platform services append to the audit log`,
	)
}

# -- delegation through specs ------------------------------------------------------

test_specs_delegation_for_deploy_roles if {
	every role in {"developer", "platform-engineer", "admin"} {
		every p in {"resources.claim", "runs.start"} {
			allowed(req(user("dana", [role]), "specs", p))
		}
	}
}

test_specs_delegation_not_for_viewer if {
	denied_with(
		req(user("bob", ["viewer"]), "specs", "resources.claim"),
		`role "viewer" of user "bob" does not grant "resources.claim"`,
	)
}

test_specs_delegation_follows_the_table if {
	# A role that may deploy but lacks runs.start in its own row still gets it via specs.
	allowed(req(user("erin", ["deployer"]), "specs", "runs.start")) with authz.role_permissions as {"deployer": {"deployments.create"}}
	denied(req(user("erin", ["deployer"]), "gateway", "runs.start")) with authz.role_permissions as {"deployer": {"deployments.create"}}
}

# -- malformed input ---------------------------------------------------------------

test_missing_subject_denied if {
	denied_with(
		object.remove(req(user("x", ["admin"]), "gateway", "deployments.create"), {"subject"}),
		"request has no subject (unauthenticated call)",
	)
}

test_empty_input_denied if {
	d := authz.decision with input as {}
	d.allow == false
	"request has no subject (unauthenticated call)" in d.reasons
	"request names no permission" in d.reasons
}

test_unknown_subject_type_denied if {
	inp := json.patch(req(user("x", ["admin"]), "gateway", "deployments.create"), [{"op": "replace", "path": "/subject/type", "value": "robot"}])
	denied_with(inp, `subject type "robot" is not recognised (expected "user" or "service")`)
}

test_unknown_permission_denied_even_for_admin if {
	denied_with(
		req(user("root", ["admin"]), "gateway", "clusters.delete"),
		`permission "clusters.delete" is not a known permission`,
	)
}

test_missing_permission_denied if {
	denied_with(
		object.remove(req(user("root", ["admin"]), "gateway", "x"), {"permission"}),
		"request names no permission",
	)
}

test_deny_always_has_a_reason if {
	# Even if no specific explanation applies, a deny says what was not granted.
	d := authz.decision with input as req(user("bob", ["viewer"]), "gateway", "runs.start")
		with authz.refusals as set()
	d == {"allow": false, "reasons": [`no rule grants "runs.start" to user "bob"`]}
}

# -- run operations and golden paths ---------------------------------------------

run_req(subject, permission) := {
	"subject": subject,
	"peer": peer("gateway"),
	"method": "/innominatus.engine.v1.EngineService/ApproveStep",
	"permission": permission,
	"request": {"name": "runs/r1/steps/gate", "reason": "ok"},
	"resource": {"type": "run", "name": "runs/r1/steps/gate", "environment": "", "application": ""},
}

test_run_operations_by_role if {
	every p in {"runs.cancel", "runs.retry", "runs.pause", "runs.resume"} {
		allowed(run_req(user("alice", ["developer"]), p))
		allowed(run_req(user("pat", ["platform-engineer"]), p))
		allowed(run_req(user("root", ["admin"]), p))
		denied_with(run_req(user("bob", ["viewer"]), p), sprintf(`role "viewer" of user "bob" does not grant "%s"`, [p]))
	}
}

test_only_platform_engineers_and_admins_approve if {
	allowed(run_req(user("pat", ["platform-engineer"]), "runs.approve"))
	allowed(run_req(user("root", ["admin"]), "runs.approve"))
	denied_with(run_req(user("alice", ["developer"]), "runs.approve"), `role "developer" of user "alice" does not grant "runs.approve"`)
	denied_with(run_req(user("bob", ["viewer"]), "runs.approve"), `role "viewer" of user "bob" does not grant "runs.approve"`)
}

test_golden_paths_by_role if {
	allowed(run_req(user("alice", ["developer"]), "goldenpaths.run"))
	denied_with(run_req(user("alice", ["developer"]), "goldenpaths.publish"), `role "developer" of user "alice" does not grant "goldenpaths.publish"`)
	allowed(run_req(user("pat", ["platform-engineer"]), "goldenpaths.publish"))
	allowed(run_req(user("root", ["admin"]), "goldenpaths.publish"))
	denied(run_req(user("bob", ["viewer"]), "goldenpaths.run"))
}

test_resource_definitions_by_role if {
	allowed(req(user("root", ["admin"]), "gateway", "resourcedefinitions.write"))
	allowed(req(user("pat", ["platform-engineer"]), "gateway", "resourcedefinitions.write"))
	denied_with(
		req(user("alice", ["developer"]), "gateway", "resourcedefinitions.write"),
		`role "developer" of user "alice" does not grant "resourcedefinitions.write"`,
	)
	denied_with(
		req(user("bob", ["viewer"]), "gateway", "resourcedefinitions.write"),
		`role "viewer" of user "bob" does not grant "resourcedefinitions.write"`,
	)
	denied(req(service("resources"), "resources", "resourcedefinitions.write"))
}

test_services_may_not_operate_runs if {
	every p in {"runs.cancel", "runs.approve"} {
		denied(json.patch(run_req(service("specs"), p), [{"op": "replace", "path": "/peer", "value": peer("specs")}]))
	}
}

# -- resource instances (provision / deprovision / check / reveal) -----------------

test_engine_service_provisions_deprovisions_checks if {
	every p in {"resources.provision", "resources.deprovision", "resources.check"} {
		allowed(req(service("engine"), "engine", p))
	}
}

test_engine_service_may_not_reveal if {
	denied_with(
		req(service("engine"), "engine", "resources.reveal"),
		`service "services/engine" is not granted "resources.reveal"; services may only call "audit.append"`,
	)
}

test_other_service_may_not_provision if {
	denied_with(
		req(service("specs"), "specs", "resources.provision"),
		`service "services/specs" is not granted "resources.provision"; services may only call "audit.append"`,
	)
}

test_engine_subject_through_other_peer_denied if {
	denied_with(
		req(service("engine"), "gateway", "resources.provision"),
		`subject "services/engine" does not match peer service "gateway" (expected "services/gateway")`,
	)
}

test_admin_and_platform_engineer_reveal_and_check if {
	every role in {"admin", "platform-engineer"} {
		every p in {"resources.reveal", "resources.check", "resources.provision", "resources.deprovision"} {
			allowed(req(user("dana", [role]), "gateway", p))
		}
	}
}

# Reveal by ownership: input.facts.resource from the resources service.
reveal_as(subject, team) := object.union(req(subject, "gateway", "resources.reveal"), {
	"method": "/innominatus.resources.v1.ResourcesService/RevealResourceSecrets",
	"request": {"name": "resources/abc"},
	"resource": {"type": "resource", "name": "resources/abc", "environment": "", "application": ""},
	"facts": {"resource": {"name": "resources/abc", "team": team, "application": "checkout", "environment": "dev", "shared": false}},
})

test_developer_reveals_secrets_of_their_teams_resource if {
	# user() is in teams/payments
	allowed(reveal_as(user("alice", ["developer"]), "payments"))
	d := authz.decision with input as reveal_as(user("alice", ["developer"]), "payments")
	d.allow
	g := authz.grants with input as reveal_as(user("alice", ["developer"]), "payments")
	g == {`role "developer" on a resource of team "payments"`}
}

test_developer_may_not_reveal_another_teams_resource if {
	d := authz.decision with input as reveal_as(user("alice", ["developer"]), "billing")
	d.allow == false
	d.reasons == [concat("", [
		`resources/abc belongs to team "billing"; user "alice" is not a member of teams/billing, `,
		`and role "developer" grants "resources.reveal" only on resources of the user's own teams: `,
		`ask a member of teams/billing, an admin or a platform engineer`,
	])]
}

test_developer_may_not_reveal_an_unowned_resource if {
	d := authz.decision with input as reveal_as(user("alice", ["developer"]), "")
	d.allow == false
	d.reasons == [concat("", [
		`role "developer" of user "alice" does not grant "resources.reveal" on resources/abc: no team owns it `,
		`(its application has none), and the role grants it only on resources of the user's own teams; `,
		`ask an admin or a platform engineer`,
	])]
}

test_developer_may_not_reveal_without_owner_facts if {
	d := authz.decision with input as req(user("alice", ["developer"]), "gateway", "resources.reveal")
	d.allow == false
	some reason in d.reasons
	contains(reason, `does not grant "resources.reveal" on checkout: the policy was not told which team owns it`)
	malformed := object.union(reveal_as(user("alice", ["developer"]), ""), {"facts": {"resource": {"team": 7}}})
	denied(malformed)
}

test_team_names_match_exactly if {
	# a team whose name contains the owner's is not the owner
	denied(reveal_as(object.union(user("alice", ["developer"]), {"teams": ["teams/payments-eu"]}), "payments"))
	denied(reveal_as(object.union(user("alice", ["developer"]), {"teams": ["payments"]}), "payments"))
}

test_other_roles_keep_their_reveal_rules if {
	# admin and platform engineer reveal whatever the owner; viewers never, not even their team's
	every role in {"admin", "platform-engineer"} {
		allowed(reveal_as(object.union(user("root", [role]), {"teams": []}), "billing"))
		allowed(reveal_as(object.union(user("root", [role]), {"teams": []}), ""))
	}
	denied_with(
		reveal_as(user("bob", ["viewer"]), "payments"),
		`role "viewer" of user "bob" does not grant "resources.reveal"`,
	)

	# the ownership grant is for reveal only: a developer may not check their team's resource
	check := object.union(reveal_as(user("alice", ["developer"]), "payments"), {"permission": "resources.check"})
	denied_with(check, `role "developer" of user "alice" does not grant "resources.check"`)
}

# -- deployments.finalize (the engine's deploy workflow renders and commits the set) --

test_engine_service_finalizes_deployments if {
	allowed(req(service("engine"), "engine", "deployments.finalize"))
}

test_other_service_may_not_finalize_deployments if {
	denied_with(
		req(service("specs"), "specs", "deployments.finalize"),
		`service "services/specs" is not granted "deployments.finalize"; services may only call "audit.append"`,
	)
}

test_developer_may_not_finalize_deployments if {
	denied(req(user("dev", ["developer"]), "gateway", "deployments.finalize"))
}

# -- applications.delete ------------------------------------------------------------

test_application_delete_by_role if {
	every r in {"admin", "platform-engineer", "developer"} {
		allowed(req(user("x", [r]), "gateway", "applications.delete"))
	}
	denied_with(
		req(user("bob", ["viewer"]), "gateway", "applications.delete"),
		`role "viewer" of user "bob" does not grant "applications.delete"`,
	)
}

# -- environments.create --------------------------------------------------------

test_environment_create_by_role if {
	every r in {"admin", "platform-engineer"} {
		allowed(req(user("x", [r]), "gateway", "environments.create"))
	}
	every r in {"developer", "viewer"} {
		denied_with(
			req(user("x", [r]), "gateway", "environments.create"),
			sprintf(`role "%s" of user "x" does not grant "environments.create"`, [r]),
		)
	}
}

# -- environments.update --------------------------------------------------------

test_environment_update_by_role if {
	every r in {"admin", "platform-engineer"} {
		allowed(req(user("x", [r]), "gateway", "environments.update"))
	}
	every r in {"developer", "viewer"} {
		denied_with(
			req(user("x", [r]), "gateway", "environments.update"),
			sprintf(`role "%s" of user "x" does not grant "environments.update"`, [r]),
		)
	}
}

# -- team ownership and quotas (input.facts) ---------------------------------------

with_facts(inp, team, usage_apps, usage_res, projected_apps, projected_res) := object.union(inp, {"facts": {
	"team": team,
	"application": "checkout",
	"application_new": projected_apps > usage_apps,
	"usage": {"applications": usage_apps, "resources": usage_res},
	"projected": {"applications": projected_apps, "resources": projected_res},
}})

deploy_as(roles) := req(user("alice", roles), "gateway", "deployments.create")

test_quotas_allow_within_the_default if {
	allowed(with_facts(deploy_as(["developer"]), "payments", 24, 99, 25, 100))
}

test_application_quota_denies_one_more_application if {
	denied_with(
		with_facts(deploy_as(["developer"]), "payments", 25, 10, 26, 12),
		`team "payments" would own 26 applications, above its quota of 25; remove an application (innominatus apps delete) or ask to raise team_quotas["payments"]`,
	)
}

test_resource_quota_denies_more_resources if {
	denied_with(
		with_facts(deploy_as(["developer"]), "payments", 3, 99, 3, 101),
		`team "payments" would hold 101 resources, above its quota of 100; declare fewer resources, remove an application (innominatus apps delete) or ask to raise team_quotas["payments"]`,
	)
}

test_a_team_past_its_quota_may_redeploy_without_growing if {
	allowed(with_facts(deploy_as(["developer"]), "payments", 30, 150, 30, 150))
	allowed(with_facts(deploy_as(["developer"]), "payments", 30, 150, 30, 120))
}

test_quotas_apply_to_rollbacks if {
	denied(with_facts(req(user("alice", ["developer"]), "gateway", "deployments.rollback"), "payments", 1, 100, 1, 101))
}

test_quotas_apply_to_admins_too if {
	denied(with_facts(object.union(deploy_as(["admin"]), {"subject": {"teams": []}}), "payments", 25, 0, 26, 0))
}

test_per_team_override_raises_one_teams_quota if {
	inp := with_facts(deploy_as(["developer"]), "payments", 25, 10, 26, 12)
	d := authz.decision with input as inp with authz.team_quotas as {"payments": {"applications": 30}}
	d.allow == true

	# the field not overridden keeps the default
	inp2 := with_facts(deploy_as(["developer"]), "payments", 1, 100, 1, 101)
	d2 := authz.decision with input as inp2 with authz.team_quotas as {"payments": {"applications": 30}}
	d2.allow == false

	# other teams keep the default
	inp3 := with_facts(object.union(deploy_as(["developer"]), {"subject": {"teams": ["teams/web"]}}), "web", 25, 10, 26, 12)
	d3 := authz.decision with input as inp3 with authz.team_quotas as {"payments": {"applications": 30}}
	d3.allow == false
}

test_non_member_may_not_deploy_for_a_team if {
	denied_with(
		with_facts(deploy_as(["developer"]), "billing", 0, 0, 1, 1),
		`user "alice" is not a member of team "billing", which owns (or would own) application "checkout"; ask a member of the team to deploy it, ask an admin to add you to teams/billing, or deploy it under another application name for one of your teams`,
	)
}

test_admins_may_deploy_for_any_team if {
	allowed(with_facts(deploy_as(["admin"]), "billing", 0, 0, 1, 1))
}

test_platform_engineers_are_not_exempt_from_membership if {
	denied(with_facts(deploy_as(["platform-engineer"]), "billing", 0, 0, 1, 1))
}

test_unowned_applications_have_no_quota_or_membership_rule if {
	allowed(with_facts(deploy_as(["developer"]), "", 500, 900, 501, 902))
}

test_requests_without_facts_are_decided_as_before if {
	allowed(deploy_as(["developer"]))
	allowed(object.union(deploy_as(["developer"]), {"facts": "not an object"}))
}

test_membership_rule_only_for_team_permissions if {
	# runs.cancel and kin are team_application_permissions now: a permission in neither table
	allowed(with_facts(req(user("alice", ["developer"]), "gateway", "resources.claim"), "billing", 0, 0, 1, 1))
}

# -- acting on a team's application: removing it, running golden paths against it ------------

app_facts(inp, team, app) := object.union(inp, {"facts": {"team": team, "application": app}})

run_facts(inp, owners) := object.union(inp, {"facts": {
	"team": owners[0].team,
	"application": owners[0].application,
	"applications": owners,
}})

delete_as(roles) := req(user("alice", roles), "gateway", "applications.delete")

test_non_member_may_not_remove_a_teams_application if {
	denied_with(
		app_facts(delete_as(["developer"]), "billing", "ledger"),
		`user "alice" is not a member of team "billing", which owns application "ledger"; only members of teams/billing may remove it: ask one of them, or ask an admin to add you to the team`,
	)
	denied(app_facts(delete_as(["platform-engineer"]), "billing", "ledger"))
}

test_members_and_admins_may_remove_a_teams_application if {
	allowed(app_facts(delete_as(["developer"]), "payments", "checkout"))
	allowed(object.union(app_facts(delete_as(["admin"]), "billing", "ledger"), {"subject": {"teams": []}}))
}

test_an_application_no_team_owns_stays_open if {
	allowed(app_facts(delete_as(["developer"]), "", "solo"))
	allowed(app_facts(req(user("alice", ["developer"]), "gateway", "goldenpaths.run"), "", "solo"))
	allowed(object.union(delete_as(["developer"]), {"facts": {}}))
}

test_removing_has_no_quota if {
	# facts without usage/projected: the quota rules never fire, however full the team is
	inp := app_facts(delete_as(["developer"]), "payments", "checkout")
	d := authz.decision with input as inp with authz.team_quotas as {"payments": {"applications": 0, "resources": 0}}
	d.allow == true
}

test_non_member_may_not_run_golden_paths_against_a_teams_application if {
	denied_with(
		run_facts(req(user("alice", ["developer"]), "gateway", "goldenpaths.run"), [{"application": "ledger", "team": "billing"}]),
		`user "alice" is not a member of team "billing", which owns application "ledger"; only members of teams/billing may run golden paths against it: ask one of them, or ask an admin to add you to the team`,
	)
	denied_with(
		run_facts(req(user("alice", ["developer"]), "gateway", "runs.start"), [{"application": "ledger", "team": "billing"}]),
		`user "alice" is not a member of team "billing", which owns application "ledger"; only members of teams/billing may start runs against it: ask one of them, or ask an admin to add you to the team`,
	)
}

test_every_application_a_run_names_is_checked if {
	# the run's own application is alice's team's; its `app` param names billing's
	denied_with(
		run_facts(
			req(user("alice", ["developer"]), "gateway", "goldenpaths.run"),
			[{"application": "checkout", "team": "payments"}, {"application": "ledger", "team": "billing"}],
		),
		`user "alice" is not a member of team "billing", which owns application "ledger"; only members of teams/billing may run golden paths against it: ask one of them, or ask an admin to add you to the team`,
	)
	allowed(run_facts(
		req(user("alice", ["developer"]), "gateway", "goldenpaths.run"),
		[{"application": "checkout", "team": "payments"}, {"application": "solo", "team": ""}],
	))
}

test_members_and_admins_may_run_golden_paths_against_a_teams_application if {
	allowed(run_facts(req(user("alice", ["developer"]), "gateway", "goldenpaths.run"), [{"application": "checkout", "team": "payments"}]))
	allowed(run_facts(
		object.union(req(user("alice", ["admin"]), "gateway", "runs.start"), {"subject": {"teams": []}}),
		[{"application": "ledger", "team": "billing"}],
	))
}

test_specs_delegated_runs_keep_the_membership_rule if {
	# a deployment's run started by specs as the deploying user: a member passes, others do not
	allowed(run_facts(req(user("alice", ["developer"]), "specs", "runs.start"), [{"application": "checkout", "team": "payments"}]))
	denied(run_facts(req(user("alice", ["developer"]), "specs", "runs.start"), [{"application": "ledger", "team": "billing"}]))
}

# -- operating on a run of a team's application: cancel, retry, pause, resume -----------------

run_operations := {"runs.cancel": "cancel", "runs.retry": "retry", "runs.pause": "pause", "runs.resume": "resume"}

test_non_member_may_not_operate_on_runs_of_a_teams_application if {
	every p, verb in run_operations {
		denied_with(
			run_facts(req(user("alice", ["developer"]), "gateway", p), [{"application": "ledger", "team": "billing"}]),
			sprintf(`user "alice" is not a member of team "billing", which owns application "ledger"; only members of teams/billing may %s runs of it: ask one of them, or ask an admin to add you to the team`, [verb]),
		)
		denied(run_facts(req(user("pat", ["platform-engineer"]), "gateway", p), [{"application": "ledger", "team": "billing"}]))
	}
}

test_members_and_admins_may_operate_on_runs_of_a_teams_application if {
	every p in object.keys(run_operations) {
		allowed(run_facts(req(user("alice", ["developer"]), "gateway", p), [{"application": "checkout", "team": "payments"}]))
		allowed(run_facts(
			object.union(req(user("alice", ["admin"]), "gateway", p), {"subject": {"teams": []}}),
			[{"application": "ledger", "team": "billing"}],
		))
	}
}

test_runs_of_no_teams_application_stay_open if {
	every p in object.keys(run_operations) {
		allowed(run_facts(req(user("alice", ["developer"]), "gateway", p), [{"application": "solo", "team": ""}]))
		allowed(object.union(req(user("alice", ["developer"]), "gateway", p), {"facts": {}}))
	}
}

test_an_owner_in_malformed_run_facts_still_binds if {
	denied(object.union(req(user("alice", ["developer"]), "gateway", "goldenpaths.run"), {"facts": {
		"team": "",
		"application": "x",
		"applications": [{"application": 1, "team": "billing"}, "nonsense"],
	}}))
}

# -- user lifecycle: UpdateUser (users.update) and RemoveTeamMember (teams.update) ----------

update_user_req(subject) := {
	"subject": subject,
	"peer": peer("gateway"),
	"method": "/innominatus.identity.v1.IdentityService/UpdateUser",
	"permission": "users.update",
	"request": {"user": {"name": "users/bob", "disabled": true}, "update_mask": "disabled"},
	"resource": {"type": "user", "name": "users/bob", "environment": "", "application": ""},
}

remove_member_req(subject) := {
	"subject": subject,
	"peer": peer("gateway"),
	"method": "/innominatus.identity.v1.IdentityService/RemoveTeamMember",
	"permission": "teams.update",
	"request": {"team": "teams/payments", "user": "users/bob"},
	"resource": {"type": "team", "name": "teams/payments", "environment": "", "application": ""},
}

test_only_admins_update_users if {
	allowed(update_user_req(user("root", ["admin"])))
	every r in {"platform-engineer", "developer", "viewer"} {
		denied_with(
			update_user_req(user("x", [r])),
			sprintf(`role "%s" of user "x" does not grant "users.update"`, [r]),
		)
	}
}

test_users_update_needs_a_user_subject if {
	denied(update_user_req(service("specs")))
	denied(update_user_req(null))
}

# Removing a member is the same grant as adding one: admins and platform engineers.
test_team_membership_removal_mirrors_adding if {
	allowed(remove_member_req(user("root", ["admin"])))
	allowed(remove_member_req(user("pat", ["platform-engineer"])))
	every r in {"developer", "viewer"} {
		denied_with(
			remove_member_req(user("x", [r])),
			sprintf(`role "%s" of user "x" does not grant "teams.update"`, [r]),
		)
	}
}

# -- user accounts: ChangePassword (users.password.change) -------------------------------

change_password_req(subject, target) := {
	"subject": subject,
	"peer": peer("gateway"),
	"method": "/innominatus.identity.v1.IdentityService/ChangePassword",
	"permission": "users.password.change",
	# As the platform sends it: both passwords already redacted.
	"request": {"name": target, "current_password": "[redacted]", "new_password": "[redacted]"},
	"resource": {"type": "user", "name": target, "environment": "", "application": ""},
}

test_every_role_changes_its_own_password if {
	every r in {"admin", "platform-engineer", "developer", "viewer"} {
		allowed(change_password_req(user("x", [r]), "users/x"))
	}
}

test_only_roles_granting_users_update_reset_another_users_password if {
	allowed(change_password_req(user("root", ["admin"]), "users/bob"))
	every r in {"platform-engineer", "developer", "viewer"} {
		denied_with(
			change_password_req(user("x", [r]), "users/bob"),
			sprintf(`role "%s" of user "x" grants "users.password.change" only on the user's own account (users/x), not on users/bob; on another user's account it needs "users.update", which no role of the user grants: ask an admin`, [r]),
		)
	}
}

# "Own" is the exact resource name: a bare username, a prefix or a look-alike is someone else's.
test_own_account_is_the_exact_user_name if {
	every target in {"x", "users/x2", "users/X", "users/x/", ""} {
		denied(change_password_req(user("x", ["developer"]), target))
	}
	denied_with(
		change_password_req(user("x", ["developer"]), ""),
		`role "developer" of user "x" grants "users.password.change" only on the user's own account (users/x), not on the user the request names; on another user's account it needs "users.update", which no role of the user grants: ask an admin`,
	)
}

test_change_password_needs_a_user_with_a_role if {
	denied(change_password_req(service("specs"), "users/specs"))
	denied(change_password_req(null, "users/x"))
	denied_with(change_password_req(user("x", []), "users/x"), `user "x" has no roles`)
	denied_with(change_password_req(user("x", ["intern"]), "users/x"), `role "intern" of user "x" is not a known role`)

	# A subject without a username owns no account, whatever its name says.
	denied(change_password_req(object.remove(user("x", ["developer"]), {"username"}), "users/x"))
}

# Granting a role "users.update" (a site's edit) makes it reset other users' passwords too.
test_other_users_password_follows_users_update if {
	widened := object.union(
		authz.role_permissions,
		{"platform-engineer": union({authz.role_permissions["platform-engineer"], {"users.update"}})},
	)
	d := authz.decision with input as change_password_req(user("pat", ["platform-engineer"]), "users/bob")
		with authz.role_permissions as widened
	d.allow == true
}
