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
    """The VQA track's config (the top level of the workflow config) through the one loader, `load_track` (its
    block is the top level): validated, the schema's defaults (the real runs') filled in place, every dataset's run
    resolved into `config["runs"]` and checked (`_check_vqa`). Raises ConfigError with one line on failure."""
    return load_track(config, None, schema_path, check=_check_vqa)


def _check_vqa(block: dict) -> None:
    """The VQA track's reference checks, on the global settings and on every dataset's resolved run."""
    _check_references(block)
    keyed = {k: block[k] for k in ("datasets", "models", "encoders")}
    for name, run in block[RUNS_KEY].items():
        try:
            _check_references({**run, **keyed})
        except ConfigError as err:
            raise ConfigError(str(err).replace("invalid config: ", f"invalid config: runs.{name} (merged): ", 1)) from None


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


# ---------------------------------------------------------------------------------------------------------------------
# One loader for every track (issue 21 item 4): the block of audio, sentiment, consistency and mt, and the top level
# for VQA (validate_config)
#
# The schema's defaults are the REAL run's settings; a demo is its own config file (config/<track>_demo.yaml) that
# adds its dataset (and its models) and puts its demo-only cuts under `runs.<demo dataset>`. The same rules for every
# track:
#   - keyed maps (top-level properties keyed by name: datasets, models, metric_models, …) given in several config files
#     ADD to each other and to the schema's default entries; each entry gets its defaults;
#   - `runs.<dataset>` is deep-merged over the block's global settings for that dataset's targets only, so a demo's
#     cuts never reach another dataset's run;
#   - a track's reference checks (`check`) see the loaded block, every dataset's run resolved.
# ---------------------------------------------------------------------------------------------------------------------
RUNS_KEY = "runs"


def merge_config_files(*configs: dict) -> dict:
    """Config files merged in order as Snakemake merges `configfile:` lines and `--configfile`s: mappings key by key
    (recursively), anything else replaced by the later file."""
    out: dict = {}
    for cfg in configs:
        out = deep_merge(out, cfg or {})
    return out


def keyed_maps(schema: dict) -> tuple[str, ...]:
    """The top-level properties of a track schema that are maps keyed by name (an object whose entries are described
    by `additionalProperties`, no fixed `properties`): datasets, models, metric_models, …"""
    return tuple(
        k for k, sub in schema.get("properties", {}).items()
        if k != RUNS_KEY and isinstance(sub.get("additionalProperties"), dict) and "properties" not in sub
    )


def _first_error(validator, instance, prefix: tuple) -> str | None:
    errors = sorted(validator.iter_errors(instance), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    return _describe(errors[0], prefix=prefix) if errors else None


def load_track(config: dict, track: str, schema_path: str | Path, check=None) -> dict:
    """The `track` block of `config`, validated against its schema, defaults (the real run's) filled, keyed maps
    added to the schema's default entries, and `runs` holding every dataset's resolved run: `runs.<dataset>`
    deep-merged over the global settings as given (not the keyed maps), then the schema's defaults filled where
    neither sets a key (so a map a run gives, e.g. a label sweep, replaces the default map instead of adding to it),
    validated again (load the config files, not a loaded block: its runs are resolved already). `check(block)` runs
    the track's own reference checks on the result. Writes the block back into `config[track]` and returns it;
    raises ConfigError with one line naming the full key path."""
    from jsonschema import Draft202012Validator

    schema = load_schema(schema_path)
    validator = Draft202012Validator(schema)
    where = (track,) if track else ()  # track None: the block is the top level (the VQA track's config)
    given = copy.deepcopy((config.get(track) if track else config) or {})
    err = _first_error(validator, given, where)
    if err:
        raise ConfigError(f"invalid config: {err}")
    keyed = keyed_maps(schema)
    for key in keyed:  # the schema's default entries stay known next to the ones config files add
        default = copy.deepcopy(schema["properties"][key].get("default") or {})
        given[key] = {**default, **(given.get(key) or {})}
    runs = given.pop(RUNS_KEY, None) or {}
    settings = {k: copy.deepcopy(v) for k, v in given.items() if k not in keyed}  # as given: defaults come last
    _fill_defaults(schema, given)
    pre = f"{track}." if track else ""
    datasets = given.get("datasets", {})
    for name, over in runs.items():
        if name not in datasets:
            raise ConfigError(f"invalid config: {pre}{RUNS_KEY}.{name}: not a key of {pre}datasets {sorted(datasets)}")
        bad = sorted(set(over or {}) & {*keyed, RUNS_KEY})
        if bad:
            raise ConfigError(f"invalid config: {pre}{RUNS_KEY}.{name}: {bad} cannot be set per dataset (keyed maps "
                              f"add entries globally)")
    for name, spec in datasets.items():
        source = (spec or {}).get("settings_from")
        if source is not None and source not in datasets:
            raise ConfigError(f"invalid config: {pre}datasets.{name}.settings_from: {source!r} is not a key of "
                              f"{pre}datasets {sorted(datasets)}")
    block = dict(given)
    block[RUNS_KEY] = {}
    for name, spec in datasets.items():
        source = (spec or {}).get("settings_from")  # a dataset that runs with another's settings (a demo's control)
        run = deep_merge(settings, runs.get(source) or {}) if source else settings
        run = deep_merge(run, runs.get(name) or {})
        err = _first_error(validator, {**run, **{k: given[k] for k in keyed if k in given}}, (*where, RUNS_KEY, name))
        if err:
            raise ConfigError(f"invalid config: {err} (runs.{name} merged over the global settings)")
        _fill_defaults(schema, run)
        block[RUNS_KEY][name] = {k: v for k, v in run.items() if k not in (*keyed, RUNS_KEY)}
    if check is not None:
        check(block)
    if track:
        config[track] = block
    else:  # the top level, in place (Snakemake's `config` object)
        config.clear()
        config.update(block)
    return config if not track else block


def track_run(block: dict, dataset: str) -> dict:
    """One dataset's resolved run of a block `load_track` returned: every setting its targets read (the keyed maps
    are the block's, shared by every dataset)."""
    try:
        return block[RUNS_KEY][dataset]
    except KeyError:
        raise ConfigError(f"unknown dataset {dataset!r}; known: {', '.join(sorted(block[RUNS_KEY]))}") from None


def resolve_track_files(paths, track: str, schema_path: str | Path, check=None) -> dict:
    """`load_track` on config files merged as Snakemake merges them (the tests' view of a run's config)."""
    configs = []
    for p in paths:
        with open(p, encoding="utf-8") as f:
            configs.append(yaml.safe_load(f) or {})
    return load_track(merge_config_files(*configs), track, schema_path, check=check)


def _leaves(obj: Any, path: tuple = ()):
    if isinstance(obj, dict) and obj:
        for k, v in obj.items():
            yield from _leaves(v, (*path, k))
    else:
        yield path, obj


def _at(obj: Any, path: tuple) -> Any:
    for k in path:
        if not isinstance(obj, dict) or k not in obj:
            return "<absent>"
        obj = obj[k]
    return obj


def demo_leaks(track: str, schema_path: str | Path, base, demo, real, dataset: str, check=None) -> list[str]:
    """What of a demo config file (`demo`) reaches the run of dataset `dataset` of a real config file (`real`), both
    merged over the `base` files as the Snakefile and `--configfile` merge them; [] when nothing does:
      - the demo file's block sets only entries of keyed maps and `runs.<a dataset the demo file adds>`;
      - the real dataset's run, its entry and every keyed entry the real run knows without the demo are the same with
        and without the demo file loaded, and the demo's own entries are named nowhere in the real run;
      - no leaf the demo file sets (under its runs, or in its entries) has its demo value in the real run where the
        real run without the demo file has another value."""
    base = [base] if isinstance(base, (str, Path)) else list(base)
    with open(demo, encoding="utf-8") as f:
        demo_block = (yaml.safe_load(f) or {}).get(track) or {}
    keyed = keyed_maps(load_schema(schema_path))
    without = resolve_track_files([*base, real], track, schema_path, check=check)
    with_demo = resolve_track_files([*base, demo, real], track, schema_path, check=check)
    leaks = []
    demo_sets = set(demo_block.get("datasets") or {}) - set(without.get("datasets", {}))
    for key in demo_block:
        if key not in (*keyed, RUNS_KEY):
            leaks.append(f"{track}.{key}: the demo file sets a global setting (put it under runs.<demo dataset>)")
    for name in demo_block.get(RUNS_KEY) or {}:
        if name not in demo_sets:
            leaks.append(f"{track}.runs.{name}: the demo file sets the run of a dataset it does not add")
    run_without, run_with = track_run(without, dataset), track_run(with_demo, dataset)
    if run_without != run_with:
        diff = sorted(".".join(map(str, p)) for p, v in _leaves(run_with) if _at(run_without, p) != v)
        leaks.append(f"{track}.runs.{dataset} differs with the demo file loaded: {diff}")
    for key in keyed:
        for name, entry in without.get(key, {}).items():
            if with_demo[key].get(name) != entry:
                leaks.append(f"{track}.{key}.{name} differs with the demo file loaded")
    added = {name for key in keyed if key != "datasets"  # what a dataset's entry or run may name: models, …
             for name in set(with_demo.get(key, {})) - set(without.get(key, {}))}
    for path, value in [*_leaves(run_with), *_leaves(with_demo["datasets"][dataset], ("datasets", dataset))]:
        if isinstance(value, str) and value in added:
            leaks.append(f"{track}.{'.'.join(map(str, path))}: names the demo's {value!r}")
    for name in demo_sets:
        for path, value in _leaves((demo_block.get(RUNS_KEY) or {}).get(name) or {}):
            if path and _at(run_without, path) != value and _at(run_with, path) == value:
                leaks.append(f"{track}.runs.{dataset}.{'.'.join(map(str, path))}: has the demo's value {value!r}")
    return leaks
