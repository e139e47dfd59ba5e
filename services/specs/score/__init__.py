"""Score parsing building blocks: safe YAML parsing with positions (parsing) and the upgrade
of deprecated list forms (upgrade). validation.py puts them together."""
