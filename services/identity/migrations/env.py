from innominatus.kit.migrate import run_env
from innominatus.identity.models import metadata

run_env(metadata)
