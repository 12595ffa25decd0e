"""Load and validate the workflow configuration against `config/schema.yaml`.

The Snakefile calls `validate_config` before it builds the DAG; so do the tests. Validation fills in
the schema's defaults and stops at the first problem with one line that names the key or value.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import yaml
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError

from toolshift import REPO_ROOT
from toolshift.errors import ConfigError

SCHEMA_PATH = REPO_ROOT / "config" / "schema.yaml"


def _with_defaults(validator_class: type) -> type:
    """A validator class that writes each property's `default` into the instance before validating."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):  # type: ignore[no-untyped-def]
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(validator_class, {"properties": set_defaults})


_DefaultingValidator = _with_defaults(Draft202012Validator)


def load_schema(path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    """Read the JSON schema (YAML syntax)."""
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


_BOMS: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)


def read_text_file(path: str | Path, what: str = "config file") -> str:
    """The text of a UTF-8 file (a UTF-8 byte-order mark is dropped). A missing file, or one in another
    encoding (UTF-16 or UTF-32, e.g. saved by a Windows editor; latin-1 / Windows-1252) or not text at all,
    raises ConfigError: one line naming the file, what it looks like and the expected encoding."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{p}: {what} not found") from None
    except OSError as exc:
        raise ConfigError(f"{p}: {what} cannot be read ({exc.strerror or exc})") from None
    fix = f"save it as UTF-8 text (toolshift reads {what}s as UTF-8)"
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            _not_utf8(p, what, f"it is {encoding} text (byte-order mark {bom.hex(' ').upper()})", fix)
    if b"\x00" in data[:4096]:
        if data[:4096].count(b"\x00") * 4 >= min(len(data), 4096) and data[1:2] == b"\x00":
            _not_utf8(p, what, "it looks like UTF-16 text without a byte-order mark", fix)
        _not_utf8(p, what, "it is a binary file, not text (it holds NUL bytes)", fix)
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        byte = data[exc.start : exc.start + 1].hex().upper()
        guess = "latin-1 or Windows-1252, e.g. an accented letter" if data[exc.start] >= 0x80 else "not text"
        _not_utf8(p, what, f"byte 0x{byte} on line {line} is not UTF-8 ({guess})", fix)


def _not_utf8(path: Path, what: str, reason: str, fix: str) -> NoReturn:
    raise ConfigError(f"{path}: {what} is not UTF-8: {reason}; {fix}") from None


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file and validate it; errors name the file (one not in UTF-8 too)."""
    text = read_text_file(path)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    try:
        return validate_config(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _where(error: ValidationError) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    return path or "(top level)"


def _describe(error: ValidationError) -> str:
    """One line for the most specific schema error."""
    where = _where(error)
    validator = error.validator
    if validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return f"unknown key {', '.join(repr(e) for e in extra)} in {where}{hint}"
    if validator == "enum":
        known = ", ".join(str(v) for v in error.validator_value)
        return f"{where}: unknown value {error.instance!r} (known: {known})"
    if validator == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return f"{where}: expected {expected}, got {type(error.instance).__name__} {error.instance!r}"
    if validator == "required":
        return f"{where}: {error.message}"
    if validator == "contains":
        return f"{where}: must include {error.validator_value.get('const')!r}"
    if validator == "propertyNames":
        return f"{where}: invalid name {error.instance!r} ({error.message})"
    return f"{where}: {error.message}"


def _leaves(error: ValidationError) -> list[ValidationError]:
    """An error and, for oneOf/anyOf/allOf, the errors of its branches."""
    found = [error]
    for sub in error.context or []:
        found.extend(_leaves(sub))
    return found


def _best_error(errors: list[ValidationError]) -> ValidationError:
    """The deepest error: it names the exact key rather than an enclosing object."""
    candidates = [leaf for error in errors for leaf in _leaves(error)]
    return max(candidates, key=lambda e: (len(e.absolute_path), not e.context))


def validate_config(config: Mapping[str, Any], schema: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Validate a config mapping, fill in defaults and return the completed copy.

    Raises ConfigError with one line naming the offending key or value.
    """
    if not isinstance(config, Mapping):
        raise ConfigError(f"config must be a mapping, got {type(config).__name__}")
    completed = copy.deepcopy(dict(config))
    schema = dict(schema) if schema is not None else load_schema()
    errors = sorted(_DefaultingValidator(schema).iter_errors(completed), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError("config: " + _describe(_best_error(errors)))
    _check_names(completed)
    check_layer_depths(completed)
    return completed


def _check_names(config: dict[str, Any]) -> None:
    """Checks that need the library's registries (dataset names, model fields)."""
    from toolshift.datasets.prompts import DATASETS, check_dataset_options

    for name, options in config["datasets"].items():
        if name not in DATASETS and options.get("path") is None:
            raise ConfigError(
                f"config: datasets: unknown dataset {name!r} (known: {', '.join(sorted(DATASETS))}; a "
                "dataset of your own takes a `path`, docs/datasets.md)"
            )
        try:
            check_dataset_options(name, options)
        except ConfigError as exc:
            raise ConfigError(f"config: {exc}") from None
        if options.get("path") is not None:
            _check_custom(name, options["path"])
    _check_images(config.get("images") or {})
    from toolshift.analysis.interventions import ablate_refusal_conditions, transfer_pairs
    from toolshift.datasets.splits import validate_fractions

    validate_fractions(config["splits"]["fractions"])
    _check_judges(config)
    for source, target in transfer_pairs(config["interventions"]):
        for name in (source, target):
            if name not in config["datasets"]:
                raise ConfigError(f"config: interventions.transfer: dataset {name!r} is not under datasets")
    _check_conditions(config)
    from toolshift.episodes.build import TEXT_TRAIL_LONG

    try:
        ablate_refusal_conditions(config["interventions"], config["conditions"])
    except ConfigError as exc:
        raise ConfigError(f"config: {exc}") from None
    check_refusal_sources(config)
    for name, entry in config["models"].items():
        if entry.get("backend", "hf") == "openai":
            if TEXT_TRAIL_LONG in config["conditions"]:
                raise ConfigError(
                    f"config: models.{name}: an api model cannot run {TEXT_TRAIL_LONG} (it is padded to the "
                    "tokens of an image on the model's processor, which an api backend lacks): leave it out "
                    "of conditions"
                )
            from toolshift.inference.api_client import ApiSettings

            ApiSettings.from_mapping(entry["api"], where=f"config: models.{name}.api")
            continue
        if entry["source"] == "fixture" and "hub_id" in entry:
            raise ConfigError(f"config: models.{name}: a fixture model takes no hub_id")
        if entry["source"] == "fixture":
            entry.setdefault("fixture", {})
            _DefaultingValidator(load_schema()["$defs"]["fixture"]).validate(entry["fixture"])
            if entry["fixture"].get("planted"):
                from toolshift.models.fixture_models.planted import PLANTED_FAMILY, check_spec

                where = f"config: models.{name}"
                if entry["family"] != PLANTED_FAMILY:
                    family = entry["family"]
                    raise ConfigError(
                        f"{where}: fixture.planted is built for family {PLANTED_FAMILY!r}, not {family!r}"
                    )
                try:
                    check_spec(entry["fixture"]["planted"], entry["fixture"]["num_layers"])
                except ConfigError as exc:
                    raise ConfigError(f"{where}: {exc}") from None


def _check_custom(name: str, path: str) -> None:
    """A custom dataset's file, read and checked before any job (columns, rows, ids, image files)."""
    from toolshift.datasets.custom import load_custom
    from toolshift.errors import DataError

    try:
        load_custom(path, name)
    except DataError as exc:
        raise ConfigError(f"config: datasets.{name}.path: {exc}") from None


def _check_images(images: Mapping[str, Any]) -> None:
    from toolshift.datasets.images import ImageLimits

    try:
        ImageLimits.from_mapping(images)
    except ConfigError as exc:
        raise ConfigError(f"config: {exc}") from None


def _check_conditions(config: dict[str, Any]) -> None:
    """Every configured condition is a controlled one (a blank size dose in its canonical spelling) or
    `free` (the schema lets any `tool_blank_x{number}` through)."""
    from toolshift import BLANK_CONDITION, is_controlled_condition

    for condition in config["conditions"]:
        if condition != "free" and not is_controlled_condition(condition):
            raise ConfigError(
                f"config: conditions: {condition!r} is not a condition; a blank size dose is "
                f"{BLANK_CONDITION}_x{{scale}} with scale positive, not 1, written as format(scale, 'g') "
                f"(e.g. {BLANK_CONDITION}_x0.25, {BLANK_CONDITION}_x4)"
            )


def model_depth(entry: Mapping[str, Any], model_dir: str | Path | None = None) -> int | None:
    """The number of decoder layers of a model entry, where it is known without loading the model: a
    fixture's `num_layers`; a hub model's `num_hidden_layers` in the `config.json` of its model folder once
    that folder exists (the text config's, else the top level's). None otherwise (an API model, a folder
    not there yet, a config that leaves the depth to the model class's default)."""
    if entry.get("backend", "hf") != "hf":
        return None
    if entry.get("source") == "fixture":
        layers = (entry.get("fixture") or {}).get("num_layers")
        return int(layers) if isinstance(layers, int) and not isinstance(layers, bool) else None
    if model_dir is None or not (Path(model_dir) / "config.json").is_file():
        return None
    import json

    try:
        cfg = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # the model load names the broken file
    if not isinstance(cfg, dict):
        return None
    for key in ("text_config", "llm_config", "language_config"):
        sub = cfg.get(key)
        if isinstance(sub, dict) and isinstance(sub.get("num_hidden_layers"), int):
            return int(sub["num_hidden_layers"])
    layers = cfg.get("num_hidden_layers")
    return int(layers) if isinstance(layers, int) and not isinstance(layers, bool) else None


def check_refusal_sources(config: Mapping[str, Any]) -> None:
    """Every dataset that needs a refusal direction has one, before any job runs.

    A dataset without harmless prompts (downloaded attack images: MM-SafetyBench SD_TYPO, JailbreakV-28K,
    HADES) has no refusal direction of its own. Its `harmless` option may name another dataset of this
    config that has harmless prompts, whose direction it borrows
    (`toolshift.datasets.prompts.refusal_source`); without one, `interventions.ablate_refusal` (which
    ablates that direction) is refused here with one line, instead of failing in the intervention jobs
    after the dataset's GPU inference.
    """
    from toolshift.analysis.interventions import ablate_refusal_conditions
    from toolshift.datasets.prompts import has_harmless_prompts, refusal_source

    datasets = config.get("datasets") or {}
    ablates = bool(ablate_refusal_conditions(config.get("interventions"), config.get("conditions")))
    for name, options in datasets.items():
        if has_harmless_prompts(name, options):
            continue
        source = refusal_source(name, options)
        where = f"config: datasets.{name}.harmless"
        if source is not None:
            if source not in datasets:
                raise ConfigError(
                    f"{where}: {source!r} is not a dataset of this study; {name} has no harmless prompts of "
                    f"its own, so harmless names the dataset under datasets whose refusal direction it uses"
                )
            if not has_harmless_prompts(source, datasets[source]):
                raise ConfigError(
                    f"{where}: {source!r} has no harmless prompts either, so it has no refusal direction to "
                    "lend; name a dataset with harmless prompts (e.g. one with a harmless control)"
                )
        elif ablates:
            raise ConfigError(
                f"config: interventions.ablate_refusal: dataset {name} has no harmless prompts, so it has no "
                f"refusal direction to ablate; set datasets.{name}.harmless to a dataset of this study with "
                "harmless prompts to borrow its direction, or turn ablate_refusal off"
            )


def check_layer_depths(config: Mapping[str, Any], results_root: str | Path | None = None) -> None:
    """An integer `interventions.layer` is a decoder layer of every model that runs interventions:
    fixtures from their config, hub models from `{results_root}/models/{name}/config.json` once their
    folder exists (the first job that loads a model checks the rest: `toolshift.inference.runner`).
    ConfigError
    naming the model, its depth and the fix."""
    from toolshift.analysis.interventions import all_intervention_ids, resolve_layer

    interventions = config.get("interventions") or {}
    layer = interventions.get("layer", "auto")
    if isinstance(layer, str) or not all_intervention_ids(
        interventions, list(config.get("datasets") or {}), config.get("conditions")
    ):
        return
    for name, entry in (config.get("models") or {}).items():
        folder = None if results_root is None else Path(results_root) / "models" / name
        depth = model_depth(entry, folder)
        if depth is None:
            continue
        try:
            resolve_layer(layer, depth)
        except ConfigError as exc:
            where = "" if entry.get("source") == "fixture" else f" ({folder / 'config.json'})"
            raise ConfigError(f"config: models.{name}{where}: {exc}") from None


def _check_judges(config: dict[str, Any]) -> None:
    """The headline judge is configured, and every configured judge has what it needs."""
    judges = config["judges"]
    if config["headline_judge"] not in judges:
        raise ConfigError(f"config: headline_judge {config['headline_judge']!r} is not in judges {judges}")
    for name in ("llamaguard", "harmbench"):
        if name in judges and name not in config["judge_models"]:
            raise ConfigError(f"config: judges lists {name!r} but judge_models.{name} is missing")
    if "api" in judges:
        if "api_judge" not in config:
            raise ConfigError("config: judges lists 'api' but api_judge is missing")
        from toolshift.inference.api_client import ApiSettings

        ApiSettings.from_mapping(config["api_judge"]["api"], where="config: api_judge.api")


def main(argv: list[str] | None = None) -> int:
    """`python -m toolshift.common.config FILE...`: check config files as the Snakefile would (encoding,
    YAML, schema, registries, layers), one line each; exit status 1 if any fails."""
    import sys

    paths = list(sys.argv[1:] if argv is None else argv)
    if not paths:
        print("usage: python -m toolshift.common.config CONFIG.yaml [...]", file=sys.stderr)
        return 2
    failed = 0
    for path in paths:
        try:
            load_config(path)
        except ConfigError as exc:
            print(f"toolshift error: {exc}", file=sys.stderr)
            failed += 1
        else:
            print(f"{path}: ok")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
