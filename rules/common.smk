# Shared by every stage: config validation, path helpers and the lists the DAG is expanded over.
import re
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)

from toolshift.config import validate_config
from toolshift.errors import ToolshiftError
from toolshift.interventions import expand_interventions

try:
    config.update(validate_config(config))
except ToolshiftError as exc:
    raise WorkflowError(str(exc)) from None


RESULTS = config["results"]
DATASETS = list(config["datasets"])
MODELS = list(config["models"])
HF_MODELS = [m for m in MODELS if config["models"][m].get("backend", "hf") == "hf"]
API_MODELS = [m for m in MODELS if config["models"][m].get("backend", "hf") == "openai"]
CONDITIONS = list(config["conditions"])
JUDGES = list(config["judges"])
SHARDS = [f"{i:03d}" for i in range(config["generation"]["shards"])]
INTERVENTIONS = [spec.id for spec in expand_interventions(config["interventions"])]
BOOK_INDEX = f"{config['book_dir']}/_build/html/index.html"
ENV = "../environment.yml"


def one_of(names):
    """A wildcard regex matching exactly one of the names."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


wildcard_constraints:
    dataset=one_of(DATASETS),
    model=one_of(MODELS),
    condition=one_of(CONDITIONS),
    intervention=one_of(INTERVENTIONS),
    judge=one_of(JUDGES),
    shard=r"\d{3}",


def res(path):
    """A path under the results root."""
    return f"{RESULTS}/{path}"


def intervention_episodes(wildcards):
    """The episodes an intervention runs on: its base condition (direct for add/random, tool otherwise)."""
    from toolshift.interventions import parse_intervention_id

    base = parse_intervention_id(wildcards.intervention).base_condition
    return res(f"episodes/{wildcards.dataset}/{base}.jsonl")


def results_root_of(path, pattern):
    """The folder that holds `path` as `pattern` (e.g. the results root above data/*/prompts.parquet)."""
    return str(Path(path).parents[pattern.count("/")])


def run_outputs(model, dataset):
    """Every responses table of one model on one dataset: conditions, then interventions."""
    runs = [res(f"runs/{model}/{dataset}/{c}/responses.parquet") for c in CONDITIONS]
    if model in HF_MODELS:  # an API model has no activations, so no vectors and no interventions
        runs += [res(f"interventions/{model}/{dataset}/{i}/responses.parquet") for i in INTERVENTIONS]
    return runs


def validated_runs(model, dataset):
    """The validation markers of every run of one model on one dataset (the judge waits for them)."""
    return [res(f"validated/runs/{model}/{dataset}/{c}.ok") for c in CONDITIONS]


def api_cache_dir(wildcards):
    """An API model's response cache: its api.cache_dir, else {results}/cache/api/{model}."""
    return config["models"][wildcards.model]["api"].get("cache_dir") or res(f"cache/api/{wildcards.model}")


def run_files(wc):
    """What validate_run reads: the run's files (activations.nc only for backends that write it)."""
    run = res(f"runs/{wc.model}/{wc.dataset}/{wc.condition}")
    files = {
        "responses": f"{run}/responses.parquet",
        "prompts": res(f"data/{wc.dataset}/prompts.parquet"),
        "episodes": res(f"episodes/{wc.dataset}/{wc.condition}.jsonl"),
    }
    if wc.model in HF_MODELS:
        files["activations"] = f"{run}/activations.nc"
    return files
