# Shared by every stage: config validation, path helpers and the lists the DAG is expanded over.
import os
import re
from importlib.util import find_spec
from pathlib import Path

# toolshift is installed in the environment that runs Snakemake (`make install`: editable, from this checkout)
# and in the rules' conda environment (environment.post-deploy.sh installs TOOLSHIFT_REPO), so neither the
# Snakefile nor a rule script edits sys.path.
_spec = find_spec("toolshift")
if _spec is None or Path(_spec.origin).resolve().parents[1] != Path(workflow.basedir).resolve():
    raise WorkflowError(
        f"toolshift must be installed from this checkout ({workflow.basedir}), found "
        + (f"{Path(_spec.origin).parent}" if _spec else "none")
        + ": run `make install` or `pip install -e .` in it"
    )
os.environ.update(TOOLSHIFT_REPO=str(Path(workflow.basedir).resolve()))

from toolshift.common.config import check_layer_depths, validate_config
from toolshift.contracts import ACTIVATION_TABLES
from toolshift.errors import ToolshiftError
from toolshift.common.guards import check_book_dir, check_output_dirs, lock_results, unlock_results
from toolshift.bundles.manifest import IMPORT_RECORD
from toolshift.analysis.interventions import (
    expand_interventions,
    transfer_alphas,
    transfer_id,
    transfer_sources,
    vectors_dataset,
)
from toolshift.datasets.prompts import prompt_options

try:
    config.update(validate_config(config))
    # hub models: interventions.layer against the depth in the model folder's config.json, once it exists
    check_layer_depths(config, config["results"])
    # a book_dir toolshift does not own (e.g. a documentation folder of the user's) is refused before any job
    check_book_dir(config["book_dir"], sources=Path(workflow.basedir) / "book")
    # results, book_dir, data_cache: a path through a file or a read-only folder stops here, not at the first write
    check_output_dirs(config)
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
# every dataset runs the same interventions; transfer runs belong to a (target, source) pair of datasets
COMMON_INTERVENTIONS = [spec.id for spec in expand_interventions(config["interventions"], None, CONDITIONS)]
TRANSFER_RUNS = [transfer_id(a, "{source}") for a in transfer_alphas(config["interventions"])]
BOOK_INDEX = f"{config['book_dir']}/_build/html/index.html"
# the record of an imported result bundle (rules/bundle.smk), which the book's provenance page shows
BUNDLE_RECORD = [f"{RESULTS}/{IMPORT_RECORD}"] if config["bundle"] else []
ENV = "../environment.yml"
VLLM_ENV = "../envs/vllm.yml"
ANALYSIS_TABLES = [
    "free_tool_use",
    "selection",
    "transfer",
    "intervention_cost",
    "representation",
    "relative_vectors",
    "tool_gap",
    "asr_by_judge",
    "judge_agreement",
    "judge_human_agreement",
]
# An API model has no activations: with no model on the hf backend the stages that read them (vectors,
# representation figures, interventions, selection, the analysis tables built from vectors and KL costs) are
# left out of the DAG, and the book says they are not available for API models.
if not HF_MODELS:
    ANALYSIS_TABLES = [t for t in ANALYSIS_TABLES if t not in ACTIVATION_TABLES]
MODEL_JUDGES = [j for j in JUDGES if j in ("llamaguard", "harmbench")]
FIGSTEP_FIDELITY = config["validation"]["figstep_fidelity"] is True or (
    config["validation"]["figstep_fidelity"] == "auto" and bool(config["data_mirror"])
)
# the planted-mechanism fixtures (the positive control) and the random-weight ones (the negative control)
PLANTED_MODELS = [m for m in HF_MODELS if (config["models"][m].get("fixture") or {}).get("planted")]
RANDOM_FIXTURES = [
    m for m in HF_MODELS if config["models"][m].get("source") == "fixture" and m not in PLANTED_MODELS
]
VALIDATION_TABLES = (
    ["validation_planted"]
    + (["validation_figstep"] if FIGSTEP_FIDELITY else [])
    + (["validation_planted_model", "validation_worlds"] if PLANTED_MODELS else [])
)
# Scheduling priorities: the inference chain first (models, prompts, episodes, infer, vectors, intervene,
# their merges), then the rest of the chain every result waits on (judge models, judges, tables, behaviour
# figures, book); the validation checks and the representation figures (priority 0) fill idle cores.
INFERENCE_FIRST = 20
CRITICAL_PATH = 10


def one_of(names):
    """A wildcard regex matching exactly one of the names."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


wildcard_constraints:
    dataset=one_of(DATASETS),
    model=one_of(MODELS),
    condition=one_of(CONDITIONS),
    source=one_of(DATASETS),
    judge=one_of(JUDGES),
    shard=r"\d{3}",


# Checks run once before the first job, by the main process only (never in dry runs): a stage appends a
# function of no arguments that raises ToolshiftError (rules/bundle.smk checks and unpacks a bundle here).
BEFORE_FIRST_JOB = []


# One run at a time per results root (Snakemake's own lock covers only its working directory): the main
# process holds {results}/.toolshift.lock from the start of execution to its end. Dry runs and jobs (which
# Snakemake starts with --no-hooks) never take it; the OS releases it if the run is killed.
onstart:
    try:
        for check in BEFORE_FIRST_JOB:
            check()
        lock_results(RESULTS)
    except ToolshiftError as exc:
        raise WorkflowError(str(exc)) from None


onsuccess:
    unlock_results(RESULTS)


onerror:
    unlock_results(RESULTS)


def res(path):
    """A path under the results root."""
    return f"{RESULTS}/{path}"


def engine_of(model):
    """The inference engine of a model: its entry's `engine`, else generation.engine."""
    return config["models"][model].get("engine") or config["generation"]["engine"]


def engine_env(wildcards):
    """The conda environment of an inference job: the vLLM one for models on the vllm engine."""
    return VLLM_ENV if engine_of(wildcards.model) == "vllm" else ENV


# a plain path unless some model runs on vLLM (a function is re-evaluated for every job of the DAG)
INFERENCE_ENV = engine_env if any(engine_of(m) == "vllm" for m in HF_MODELS) else ENV


def gpu_job_mem_mb(wildcards):
    """Host memory a GPU job asks its scheduler for (generation.gpu_mem_mb, at least 2000 MB)."""
    return max(config["generation"]["gpu_mem_mb"], 2000)


def inference_job_params(wildcards, input):
    """What an inference job needs besides its files: the model entry, generation settings, sharding."""
    return {
        "results": results_above_prompts(wildcards, input),
        "entry": config["models"][wildcards.model],
        "generation": config["generation"],
        "n_shards": len(SHARDS),
    }


def transfer_job_params(wildcards, input):
    """An unsharded transfer job's parameters: inference_job_params with one shard."""
    return {**inference_job_params(wildcards, input), "n_shards": 1}


def transfer_run_ids(wildcards):
    """The transfer run ids of one source dataset."""
    return [run.format(source=wildcards.source) for run in TRANSFER_RUNS]


def transfer_cost_files(wildcards):
    """The cost tables of every transfer job into one (model, target dataset)."""
    return [
        res(f"costs/{wildcards.model}/{wildcards.dataset}/transfer/{source}.parquet")
        for source in transfer_sources(config["interventions"], wildcards.dataset)
    ]


def results_root_of(path, pattern):
    """The folder that holds `path` as `pattern` (the results root above data/*/prompts.parquet). Jobs
    find the results root this way, from their own files, so that it follows the paths wherever a storage
    plugin puts them (snakemake --lint)."""
    return str(Path(path).parents[pattern.count("/")])


def results_above_prompts(wildcards, input):
    """The results root of a job that reads data/{dataset}/prompts.parquet."""
    return results_root_of(input.prompts, "data/*/prompts.parquet")


def results_above_output_prompts(wildcards, output):
    """The results root of the job that writes data/{dataset}/prompts.parquet."""
    return results_root_of(output.prompts, "data/*/prompts.parquet")


def results_above_table(wildcards, output):
    """The results root of a job that writes tables/{name}.csv."""
    return results_root_of(output[0], "tables/*.csv")


def results_above_asr(wildcards, input):
    """The results root of a job that reads tables/asr.csv."""
    return results_root_of(input.asr, "tables/asr.csv")


def book_dir_above_index(wildcards, output):
    """The book folder of the job that writes its _build/html/index.html."""
    return results_root_of(output[0], "_build/html/index.html")


def model_entry(wildcards):
    """A model's config entry."""
    return config["models"][wildcards.model]


def judge_entry(wildcards):
    """A model judge's config entry (judge_models)."""
    return config["judge_models"][wildcards.judge]


def judge_gpus(wildcards):
    """GPUs a judge job holds: one for a model judge, none for the keyword and API judges."""
    return int(wildcards.judge in MODEL_JUDGES)


def has_activations(wildcards):
    """Whether a model's runs write activations (HF-backend models; API models do not)."""
    return wildcards.model in HF_MODELS


def dataset_options(wildcards):
    """What building a dataset's prompts needs: its config entry, the data mirror, cache and lock, and the
    attack images' size limits."""
    return {
        **prompt_options(wildcards.dataset, config["datasets"][wildcards.dataset]),
        "data_mirror": config["data_mirror"],
        "data_cache": config["data_cache"],
        "data_lock": config["data_lock"],
        "images": config["images"],
    }


def refusal_source_vectors(wildcards):
    """The vectors file whose refusal direction a dataset without harmless prompts borrows (its
    `harmless` option names that dataset: toolshift.datasets.prompts.refusal_source), else none."""
    from toolshift.datasets.prompts import refusal_source

    source = refusal_source(wildcards.dataset, config["datasets"][wildcards.dataset])
    return {"refusal_source": res(f"vectors/{wildcards.model}/{source}.nc")} if source else {}


def intervention_base_episodes(wildcards):
    """The episodes the interventions run on: their base conditions (direct for add/random, tool for
    subtract/ablate, the condition an ablate_refusal_{condition} names)."""
    from toolshift.analysis.interventions import parse_intervention_id

    bases = dict.fromkeys(parse_intervention_id(i).base_condition for i in COMMON_INTERVENTIONS)
    return [res(f"episodes/{wildcards.dataset}/{base}.jsonl") for base in bases]


def interventions_of(dataset):
    """The intervention ids run on one dataset (transfer runs belong to their target dataset)."""
    return [spec.id for spec in expand_interventions(config["interventions"], dataset, CONDITIONS)]


def run_outputs(model, dataset):
    """Every responses table of one model on one dataset: conditions, then interventions."""
    runs = [res(f"runs/{model}/{dataset}/{c}/responses.parquet") for c in CONDITIONS]
    if model in HF_MODELS:  # an API model has no activations, so no vectors and no interventions
        runs += [
            res(f"interventions/{model}/{dataset}/{i}/responses.parquet") for i in interventions_of(dataset)
        ]
    return runs


def api_cache_dir(wildcards):
    """An API model's response cache: its api.cache_dir, else {results}/cache/api/{model}."""
    return config["models"][wildcards.model]["api"].get("cache_dir") or res(f"cache/api/{wildcards.model}")


def run_files(wc):
    """What validate_runs reads: every condition run of a model on a dataset (activations.nc only for
    backends that write it), the prompts and the episodes."""
    runs = [res(f"runs/{wc.model}/{wc.dataset}/{c}") for c in CONDITIONS]
    files = {
        "responses": [f"{run}/responses.parquet" for run in runs],
        "prompts": res(f"data/{wc.dataset}/prompts.parquet"),
        "episodes": [res(f"episodes/{wc.dataset}/{c}.jsonl") for c in CONDITIONS],
    }
    if wc.model in HF_MODELS:
        files["activations"] = [f"{run}/activations.nc" for run in runs]
    return files


def intervention_jobs_done(model, dataset):
    """One output of every job that writes interventions of a model on a dataset: a job's outputs appear
    together, so these stand for all of them (merge_interventions, and transfer per source)."""
    if model not in HF_MODELS:
        return []
    ids = interventions_of(dataset)
    done = (
        [res(f"interventions/{model}/{dataset}/{ids[0]}/responses.parquet")] if COMMON_INTERVENTIONS else []
    )
    for source in transfer_sources(config["interventions"], dataset):
        first = TRANSFER_RUNS[0].format(source=source)
        done.append(res(f"interventions/{model}/{dataset}/{first}/responses.parquet"))
    return done


def judge_inputs(wildcards):
    """A judge job waits for the validated condition runs and the interventions of every model on the
    dataset (marker files and one output per job; the thousands of responses tables themselves are
    params, judged_runs: as inputs they would slow every DAG build), and reads the prompts and its judge
    model if any."""
    files = {
        "validated": [res(f"validated/runs/{model}/{wildcards.dataset}.ok") for model in MODELS],
        "interventions": [f for model in MODELS for f in intervention_jobs_done(model, wildcards.dataset)],
        "prompts": res(f"data/{wildcards.dataset}/prompts.parquet"),
    }
    if wildcards.judge in MODEL_JUDGES:
        files["judge_model"] = res(f"models/judges/{wildcards.judge}")
    return files


def judged_runs(wildcards):
    """The responses tables a judge job reads: every run of every model on the dataset (run_outputs)."""
    return [run for model in MODELS for run in run_outputs(model, wildcards.dataset)]


def judge_options_for(judge, results_root):
    """Keyword arguments for toolshift.judges.keyword.judge_frame (the judge model dir is added by the script)."""
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
