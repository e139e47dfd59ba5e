from innominatus.kit.migrate import run_env
from innominatus.specs.models import metadata

run_env(metadata)
