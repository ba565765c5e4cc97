"""Config validation against config/config.schema.yaml, with defaults, and the canonical config slices that rules
receive as params (sorted-key JSON, so re-ordering YAML keys never looks like a change to Snakemake)."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """One line: which key is wrong and what is allowed."""


def _key_path(path) -> str:
    parts = []
    for p in path:
        parts.append(f"[{p}]" if isinstance(p, int) else (("." if parts else "") + str(p)))
    return "".join(parts) or "<top level>"


def _describe(error, prefix: tuple = ()) -> str:
    where = _key_path([*prefix, *error.absolute_path])
    v = error.validator
    if v == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        allowed = sorted(error.schema.get("properties", {}))
        return f"{where}: unknown key(s) {extra}; allowed keys: {allowed}"
    if v == "enum":
        return f"{where}: {error.instance!r} is not allowed; allowed: {error.validator_value}"
    if v == "required":
        return f"{where}: {error.message}"
    if v == "type":
        return f"{where}: {error.instance!r} must be of type {error.validator_value}"
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return f"{where}: {error.instance!r} violates {v} {error.validator_value}"
    return f"{where}: {error.message}"


def _fill_defaults(schema: dict, instance: Any) -> None:
    if not isinstance(instance, dict):
        return
    props = schema.get("properties", {})
    for key, sub in props.items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            _fill_defaults(sub, instance[key])
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, value in instance.items():
            if key not in props:
                _fill_defaults(extra, value)


def load_schema(path: str | Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def validate_config(config: dict, schema_path: str | Path) -> dict:
    """Fill defaults into `config` (in place) and validate it; raise ConfigError with one line on failure."""
    from jsonschema import Draft202012Validator

    schema = load_schema(schema_path)
    validator = Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        raise ConfigError(f"invalid config: {_describe(errors[0])}")
    _fill_defaults(schema, config)
    _check_references(config)
    for name in config["datasets"]:
        run = run_config(config, name)
        errors = sorted(validator.iter_errors(run), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
        if errors:
            raise ConfigError(f"invalid config: runs.{name} (merged over the global blocks): {_describe(errors[0])}")
        _fill_defaults(schema, run)
        try:
            _check_references(run)
        except ConfigError as err:
            raise ConfigError(str(err).replace("invalid config: ", f"invalid config: runs.{name} (merged): ", 1)) from None
    return config


# the blocks a dataset's run may set in `runs.<dataset>` (config.schema.yaml); the rest is shared by every run
RUN_BLOCKS = ("experiment", "beam", "selector", "infer", "prompt", "baselines", "metrics", "preset")


def deep_merge(base: Any, over: Any) -> Any:
    """`over` merged into a copy of `base`: mappings key by key, anything else (lists included) replaced."""
    if not (isinstance(base, dict) and isinstance(over, dict)):
        return copy.deepcopy(over)
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = deep_merge(out[key], value) if key in out else copy.deepcopy(value)
    return out


def run_config(config: dict, dataset: str) -> dict:
    """The config one dataset's targets run with: `runs.<dataset>` deep-merged over the global blocks (the real
    runs' settings; a demo's live under its own dataset's run). A dataset with `settings_from: <other>` takes
    `runs.<other>` first, then its own entry. Keys a run does not name come from the global blocks; `runs` itself
    is left out."""
    if dataset not in config["datasets"]:
        raise ConfigError(f"unknown dataset {dataset!r}; known datasets: {', '.join(sorted(config['datasets']))}")
    from leverplus.tracks.vqa.models.presets import apply_preset  # a named protocol (`preset`) expanded into its blocks

    runs = config.get("runs") or {}
    base = {k: v for k, v in config.items() if k != "runs"}
    source = config["datasets"][dataset].get("settings_from")
    run = deep_merge(base, runs.get(source, {})) if source else base
    run = deep_merge(run, runs.get(dataset, {}))
    return apply_preset(run, config["datasets"][dataset].get("format"))


def _check_references(config: dict) -> None:
    if config["dataset"] not in config["datasets"]:
        raise ConfigError(f"invalid config: dataset: {config['dataset']!r} is not a key of datasets {sorted(config['datasets'])}")
    if config.get("control_dataset") and config["control_dataset"] not in config["datasets"]:
        raise ConfigError(f"invalid config: control_dataset: {config['control_dataset']!r} is not a key of datasets "
                          f"{sorted(config['datasets'])}")
    for name, spec in config["datasets"].items():
        if spec.get("settings_from") is not None and spec["settings_from"] not in config["datasets"]:
            raise ConfigError(f"invalid config: datasets.{name}.settings_from: {spec['settings_from']!r} is not a key of "
                              f"datasets {sorted(config['datasets'])}")
    for name in config.get("runs") or {}:
        if name not in config["datasets"]:
            raise ConfigError(f"invalid config: runs.{name}: not a key of datasets {sorted(config['datasets'])}")
    exp = config["experiment"]
    for m in exp["models"]:
        if m not in config["models"]:
            raise ConfigError(f"invalid config: experiment.models: {m!r} is not a key of models {sorted(config['models'])}")
    if exp["encoder"] not in config["encoders"]:
        raise ConfigError(
            f"invalid config: experiment.encoder: {exp['encoder']!r} is not a key of encoders {sorted(config['encoders'])}"
        )
    for name, spec in config["models"].items():
        if spec["source"] == "hf" and "repo_id" not in spec:
            raise ConfigError(f"invalid config: models.{name}: source hf needs repo_id")
        if spec["source"] == "local" and "path" not in spec:
            raise ConfigError(f"invalid config: models.{name}: source local needs path")


def validate_track(config: dict, track: str, schema_path: str | Path) -> dict:
    """Validate the `track` block of `config` (audio, sentiment, consistency, mt) against its own schema file, fill
    its defaults in place and return it. The error names the full key path (e.g. `audio.generation.max_new_tokens`)."""
    from jsonschema import Draft202012Validator

    schema = load_schema(schema_path)
    block = config.setdefault(track, {})
    if block is None:
        block = config[track] = {}
    errors = sorted(Draft202012Validator(schema).iter_errors(block), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        raise ConfigError(f"invalid config: {_describe(errors[0], prefix=(track,))}")
    _fill_defaults(schema, block)
    return block


def canonical(obj: Any) -> str:
    """Sorted-key, whitespace-free JSON: the form every rule's params take."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# selector config blocks only some versions read: left out of the others' slices, so that changing them reruns only
# the versions that read them
VERSION_BLOCKS = {"lora": ("v2_lora",), "rl": ("v3", "v4"), "reward": ("v4",)}


def selector_config(config: dict, version: str) -> dict:
    """The selector slice a version trains with: shared keys plus that version's overrides (mappings merged key by
    key).  `versions` and `seeds` say which trainings run, not how: they are not part of it."""
    sel = {k: v for k, v in config["selector"].items() if k not in ("per_version", "versions", "seeds")}
    sel = deep_merge(sel, config["selector"].get("per_version", {}).get(version, {}))
    for block, readers in VERSION_BLOCKS.items():
        if version not in readers:
            sel.pop(block, None)
    return sel


def selector_seeds(config: dict) -> list[int]:
    """Training seeds of every selector version: `selector.seeds`, or the experiment seed alone."""
    seeds = config["selector"].get("seeds")
    return [int(s) for s in seeds] if seeds else [int(config["experiment"].get("seed", 0))]

