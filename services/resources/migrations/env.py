from innominatus.kit.migrate import run_env
from innominatus.resources.models import metadata

run_env(metadata)
