from innominatus.kit.migrate import run_env
from innominatus.engine.models import metadata

run_env(metadata)
