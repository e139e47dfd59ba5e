from innominatus.kit.migrate import run_env
from innominatus.engine.models import metadata
import innominatus.engine.catalog_models  # noqa: F401,E402 - its tables share the engine's metadata

run_env(metadata)
