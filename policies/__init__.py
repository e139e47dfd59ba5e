"""The Rego policies, shipped inside the distribution as ``innominatus.policies`` so an
installed platform finds them without the source tree. OPA ignores this file."""
