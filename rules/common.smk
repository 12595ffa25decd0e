# Shared by every stage: config validation, path helpers and the lists the DAG is expanded over.
import re
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)

from toolshift.config import validate_config
from toolshift.errors import ToolshiftError
from toolshift.interventions import all_intervention_ids, expand_interventions, vectors_dataset

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
INTERVENTIONS = all_intervention_ids(config["interventions"], DATASETS)
BOOK_INDEX = f"{config['book_dir']}/_build/html/index.html"
ENV = "../environment.yml"
ANALYSIS_TABLES = [
    "free_tool_use",
    "selection",
    "transfer",
    "intervention_cost",
    "representation",
    "asr_by_judge",
    "judge_agreement",
    "judge_human_agreement",
]
MODEL_JUDGES = [j for j in JUDGES if j in ("llamaguard", "harmbench")]
FIGSTEP_FIDELITY = config["validation"]["figstep_fidelity"] is True or (
    config["validation"]["figstep_fidelity"] == "auto" and bool(config["data_mirror"])
)
VALIDATION_TABLES = ["validation_planted"] + (["validation_figstep"] if FIGSTEP_FIDELITY else [])


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


def interventions_of(dataset):
    """The intervention ids run on one dataset (transfer runs belong to their target dataset)."""
    return [spec.id for spec in expand_interventions(config["interventions"], dataset)]


def intervention_vectors(wildcards):
    """The vectors file an intervention reads: its own dataset's, or a transfer run's source dataset's."""
    source = vectors_dataset(wildcards.intervention, wildcards.dataset)
    return res(f"vectors/{wildcards.model}/{source}.nc")


def cost_vector_datasets(dataset):
    """The dataset itself, then the sources of its transfer runs (the vectors files its costs read)."""
    ids = interventions_of(dataset)
    return list(dict.fromkeys([dataset] + [vectors_dataset(i, dataset) for i in ids]))


def results_root_of(path, pattern):
    """The folder that holds `path` as `pattern` (e.g. the results root above data/*/prompts.parquet)."""
    return str(Path(path).parents[pattern.count("/")])


def run_outputs(model, dataset):
    """Every responses table of one model on one dataset: conditions, then interventions."""
    runs = [res(f"runs/{model}/{dataset}/{c}/responses.parquet") for c in CONDITIONS]
    if model in HF_MODELS:  # an API model has no activations, so no vectors and no interventions
        runs += [
            res(f"interventions/{model}/{dataset}/{i}/responses.parquet") for i in interventions_of(dataset)
        ]
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


def judge_inputs(wildcards):
    """A judge job reads every run of the model on the dataset, the prompts, and its judge model if any."""
    files = {
        "runs": run_outputs(wildcards.model, wildcards.dataset),
        "validated": validated_runs(wildcards.model, wildcards.dataset),
        "prompts": res(f"data/{wildcards.dataset}/prompts.parquet"),
    }
    if wildcards.judge in MODEL_JUDGES:
        files["judge_model"] = res(f"models/judges/{wildcards.judge}")
    return files


def judge_options_for(judge, results_root):
    """Keyword arguments for toolshift.judges.judge_frame (the judge model dir is added by the script)."""
    if judge == "keyword":
        return {"list_name": config["keyword_list"]}
    if judge == "api":
        return {
            "api": config["api_judge"]["api"],
            "max_tokens": config["api_judge"]["max_tokens"],
            "cache_dir": res("cache/api_judge"),
        }
    entry = config["judge_models"][judge]
    options = {k: entry[k] for k in ("variant", "dtype", "batch_size", "request_field")}
    options.update(revision=entry.get("revision"), device=config["generation"]["device"])
    if entry["variant"] == "llamaguard3_vision" or entry["variant"] == "llamaguard4":
        options["results_root"] = results_root
    if judge == "harmbench":
        options.pop("variant")
    return options


def judge_options(wildcards):
    """The options of one judge job."""
    return judge_options_for(wildcards.judge, RESULTS)
