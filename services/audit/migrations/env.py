from innominatus.kit.migrate import run_env
from innominatus.audit.models import metadata

run_env(metadata)
