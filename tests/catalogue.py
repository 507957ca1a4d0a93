"""Every architecture of the installed ``transformers``, built from a tiny config derived from its own.

No hand-written configs: each ``model_type``'s config class is instantiated with its defaults,
then every size it holds is shrunk by what its field is named (layers to 2, heads to 2, widths
to 32, feed-forward widths to 64, vocabularies to the smallest that fits the config's token
ids, images to 32 pixels...), lists of per-layer settings cut to the new depth keeping each
distinct value, and the config built again from the result so its own checks and derived
fields run. The model class is the base model where there is one, else the first task class
(mappings in alphabetical order). Inputs are made from the forward's signature and the config.
Nothing is downloaded.

``build(model_type)`` gives ``(model, kwargs)`` or raises :class:`NotBuilt` saying why.
Everything is seeded, so a build is the same in every process.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import io
import re
import sys
import warnings
from collections.abc import Callable
from typing import Any

import torch

BATCH = 2
SEQUENCE = 8
IMAGE = 32
WIDTH = 32
FEED_FORWARD = 64
HEAD_DIM = 16
#: The model classes that make inputs for themselves or need a runtime the catalogue has not.
NOT_MODELS = frozenset({"encoder-decoder", "vision-encoder-decoder", "speech-encoder-decoder"})


class NotBuilt(Exception):
    """An architecture the catalogue could not build or give inputs to (not a tracer problem)."""


# -- which class each model type is built with -------------------------------------------


def _mappings() -> dict[str, str]:
    from transformers.models.auto import modeling_auto

    names = sorted(
        n for n in dir(modeling_auto) if n.startswith("MODEL_FOR_") and n.endswith("_MAPPING_NAMES")
    )
    chosen = dict(modeling_auto.MODEL_MAPPING_NAMES)
    for name in names:
        for model_type, class_name in getattr(modeling_auto, name).items():
            chosen.setdefault(model_type, class_name)
    return {t: c if isinstance(c, str) else c[0] for t, c in chosen.items()}


def architectures() -> list[str]:
    """Every model type with a config and a model class, sorted."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    models = _mappings()
    return sorted(t for t in CONFIG_MAPPING_NAMES if t in models and t not in NOT_MODELS)


# -- tiny configs -------------------------------------------------------------------------

_LAYERS = re.compile(
    r"(^|_)(num_)?(hidden_|encoder_|decoder_|text_|vision_)?(layers|layer|blocks)$|^n_layers?$|depth$"
)
_HEADS = re.compile(r"heads?$|^n_head")
_HEAD_DIM = re.compile(r"head_dim$|^d_kv$|^kv_channels$|head_size$|_head_dim$|^rotary_dim$")
_FEED_FORWARD = re.compile(r"intermediate|ffn|^d_ff$|^n_inner$|mlp_dim|_ff_|^ff_|dim_feedforward")
_WIDTH = re.compile(
    r"hidden_size|^d_model$|^n_embd$|embed_dim|^dim$|hidden_dim|projection_dim|embedding_size|"
    r"^d_inner$|_dim$|_size$|channels$|^hidden_sizes$"
)
_KEEP = re.compile(
    r"token|_id$|_ids$|index|num_labels|num_channels|in_channels|out_channels|patch|kernel|stride|"
    r"window|position|max_|batch|sampling_rate|sample_rate|mel|feature_size|image_size|vocab|chunk|"
    r"bucket|codebook|label|class|pad|group|dilation|num_frames|frames|length|rank|scale|ratio|"
    r"factor|rope|seed|bins|query"
)
#: Fields a config derives from the sizes: left out, so that it derives them from the tiny ones.
_DERIVED = frozenset({"out_features", "out_indices", "stage_names", "per_layer_config"})
#: Lists with one entry per layer, named as layer counts are (``no_rope_layers``, ``moe_layers``).
_PER_LAYER = re.compile(r"._layers$")
_EXPERTS = re.compile(r"experts$")
_TOP_K = re.compile(r"experts_per_tok|top_k|topk|num_selected|^n_group$|^num_expert_group$")


def _small(key: str, value: int) -> int:
    """The tiny size for an int field, by its name; the value itself where none applies."""
    if value <= 1:
        return value
    if _TOP_K.search(key):
        return min(value, 2)
    if _EXPERTS.search(key):
        return min(value, 4)
    if _LAYERS.search(key):
        return min(value, 2)
    if _HEAD_DIM.search(key):
        return min(value, HEAD_DIM)
    if "key_value_heads" in key or key in {"num_kv_heads", "n_kv_heads"}:
        return min(value, 1)
    if _HEADS.search(key):
        return min(value, 2)
    if key.startswith("vocab") or key.endswith("vocab_size"):
        return value  # set after, from the token ids
    if key in {"image_size", "img_size", "input_size"}:
        return min(value, IMAGE)
    if key in {"max_position_embeddings", "n_positions", "max_source_positions", "max_target_positions"}:
        return min(value, 64)
    if _KEEP.search(key):
        return value
    if _FEED_FORWARD.search(key):
        return min(value, FEED_FORWARD)
    if _WIDTH.search(key):
        return min(value, WIDTH)
    return value


def _layer_list(values: list[Any], length: int) -> list[Any]:
    """A per-layer list cut to ``length``, each distinct value kept while there is room."""
    firsts = []
    for value in values:
        if value not in firsts:
            firsts.append(value)
    kept = firsts[:length]
    return kept + values[len(kept) : len(kept) + length - len(kept)] if len(kept) < length else kept


def _shrink(data: dict[str, Any]) -> dict[str, Any]:
    """A config dict (sub-configs as dicts) with every size made tiny."""
    out: dict[str, Any] = {}
    layer_counts = {}
    stages: set[int] = set()
    depths = {v for k, v in data.items() if type(v) is int and v > 1 and _LAYERS.search(k)}
    for key, value in data.items():
        if key in _DERIVED:
            continue
        if isinstance(value, bool) or key.startswith("_") or key in {"id2label", "label2id"}:
            out[key] = value
        elif isinstance(value, int):
            out[key] = _small(key, value)
            if _LAYERS.search(key) and out[key] != value:
                layer_counts[value] = out[key]
        elif isinstance(value, dict) and ("model_type" in value or any(k.endswith("_size") for k in value)):
            out[key] = _shrink(value)
        elif (
            isinstance(value, list)
            and value
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ):
            if _PER_LAYER.search(key) and len(value) in depths:
                out[key] = value  # one entry per layer (`no_rope_layers`): cut to the new depth below
            elif _LAYERS.search(key) or key in {"depths", "layers"}:
                # Stage ``i`` keeps up to ``i + 1`` layers: cvt reads a per-layer rate at its stage index.
                out[key] = [min(v, i + 1) for i, v in enumerate(value)]
                stages.add(len(value))
            elif _HEADS.search(key):
                out[key] = [min(v, 2) for v in value]
            elif _WIDTH.search(key) and not _KEEP.search(key) and max(value) > WIDTH:
                factor = max(value) // WIDTH
                out[key] = [max(2, v // factor) for v in value]
            else:
                out[key] = value
        else:
            out[key] = value
    for key, value in list(out.items()):  # per-layer lists follow the new depth, per-stage ones stay
        if isinstance(value, list) and len(value) in layer_counts and len(value) not in stages:
            out[key] = _layer_list(value, layer_counts[len(value)])
    _agree(data, out)
    token_ids = [
        v for k, v in out.items()
        if isinstance(v, int) and not isinstance(v, bool) and ("token" in k or k.endswith("_id")) and v >= 0
    ]  # fmt: skip
    for key, value in out.items():
        if isinstance(value, int) and (key.startswith("vocab") or key.endswith("vocab_size")) and value > 128:
            out[key] = max([128, *(t + 1 for t in token_ids if t < value)])
    return out


def _reads_rotary_sections(data: dict[str, Any]) -> bool:
    """Whether the code of the config's model, or of a sub-config's, splits its rotary by ``mrope_section``.

    Such code has a default of its own where the config sets none, sized for the full heads.
    """
    if "mrope_section" in repr(data):
        return True
    types = [data.get("model_type"), *(v.get("model_type") for v in data.values() if isinstance(v, dict))]
    for model_type in filter(None, types):
        try:
            source = inspect.getsource(sys.modules[_model_class(model_type).__module__])
        except (KeyError, NotBuilt, OSError, TypeError):
            continue
        if "mrope_section" in source:
            return True
    return False


def _with_rotary_sections(data: dict[str, Any]) -> None:
    """Give each rope of the config the (time, height, width) sections of the tiny heads' rotary."""
    for holder in (data, *(v for v in data.values() if isinstance(v, dict))):
        rope = holder.get("rope_parameters")
        if isinstance(rope, dict) and "rope_type" in rope:
            factor = rope.get("partial_rotary_factor", holder.get("partial_rotary_factor", 1.0)) or 1.0
            half = int(HEAD_DIM * factor) // 2
            time = max(1, half // 4)
            height = (half - time) // 2
            rope["mrope_section"] = [time, height, half - time - height]
        if holder is not data:
            _with_rotary_sections(holder)


#: A state-space mixer's (heads, head width, expansion, groups), as the two spellings name them.
_STATE_SPACE = (
    ("mamba_n_heads", "mamba_d_head", "mamba_expand", "mamba_n_groups"),
    ("num_heads", "head_dim", "expand", "n_groups"),
)


def _agree(default: dict[str, Any], out: dict[str, Any]) -> None:
    """Sizes a config checks against each other, made to agree again after shrinking."""
    _agree_attention(default, out)
    width = out.get("hidden_size")
    for heads, head_width, expand, groups in _STATE_SPACE:
        if all(isinstance(out.get(k), int) for k in (heads, head_width, expand, "hidden_size")):
            out[head_width] = out[expand] * width // out[heads]  # heads times width is the expanded width
            if isinstance(out.get(groups), int) and out[heads] % out[groups]:
                out[groups] = 1
            if "mamba_d_ssm" in out:
                out["mamba_d_ssm"] = out[expand] * width
    for key, value in default.items():  # grouped convolutions with a group per channel keep it so
        if "groups" in key and type(value) is int and value > 1 and value == default.get("hidden_size"):
            out[key] = width
    stages, patch = out.get("depths"), out.get("patch_size")
    if type(out.get("window_size")) is int and isinstance(stages, list) and type(patch) is int:
        # Swin's windows fit its last stage, which halves the patches' grid at each stage after the first.
        out["window_size"] = min(out["window_size"], max(1, IMAGE // patch >> (len(stages) - 1)))
    if isinstance(out.get("index_topk"), int) and isinstance(out.get("index_kpool"), int):
        out["index_topk"] = out["index_kpool"]  # a top-k stays a multiple of the pool it is drawn from


def _agree_attention(default: dict[str, Any], out: dict[str, Any]) -> None:
    """Head counts and widths: keys with as many heads as queries (latent attention) keep that.

    A query width that is the sum of its parts stays so; a head width that must be the width
    over the heads (``d_head``), or is left ``None`` where the models read it as that, is so.
    """
    heads, kv_heads = "num_attention_heads", "num_key_value_heads"
    if all(isinstance(out.get(k), int) for k in ("d_head", "d_model", "n_head")):
        out["d_head"] = out["d_model"] // out["n_head"]
    if "head_dim" in out and out["head_dim"] is None and isinstance(out.get(heads), int):
        out["head_dim"] = out.get("hidden_size", WIDTH) // out[heads]
    if default.get(kv_heads) is not None and default.get(kv_heads) == default.get(heads):
        out[kv_heads] = out[heads]
    parts = ("qk_nope_head_dim", "qk_rope_head_dim")
    if all(isinstance(out.get(k), int) for k in parts):
        for key in ("qk_head_dim", "head_dim"):
            if default.get(key) == sum(default[k] for k in parts):
                out[key] = sum(out[k] for k in parts)


def tiny_config(model_type: str) -> Any:
    from transformers import AutoConfig

    try:
        with _quiet():
            default = AutoConfig.for_model(model_type)
            data = _shrink(default.to_dict())
            data.pop("model_type", None)
            data.pop("transformers_version", None)
            if _reads_rotary_sections({**data, "model_type": model_type}):
                _with_rotary_sections(data)
            config = type(default).from_dict(data)
    except Exception as error:  # noqa: BLE001 - any config that will not shrink is not built
        raise NotBuilt(f"config: {type(error).__name__}: {_short(error)}") from None
    for name in ("use_cache", "return_dict"):
        if hasattr(config, name):
            setattr(config, name, name == "return_dict")
    config._attn_implementation = "eager"
    return config


# -- models and inputs --------------------------------------------------------------------


def _model_class(model_type: str) -> type:
    import transformers

    name = _mappings()[model_type]
    cls = getattr(transformers, name, None)
    if cls is None:
        raise NotBuilt(f"model class {name} is not importable")
    return cls


def _sub(config: Any, *names: str) -> list[Any]:
    """The config and its sub-configs, where each named field may be found."""
    found = [config]
    for attribute in ("vision_config", "text_config", "audio_config", "encoder_config", "backbone_config"):
        sub = getattr(config, attribute, None)
        if sub is not None and not isinstance(sub, dict):
            found.append(sub)
    return found


def _field(config: Any, name: str, default: Any) -> Any:
    for holder in _sub(config):
        value = getattr(holder, name, None)
        if value is not None:
            return value
    return default


def _inputs(model: Any, config: Any) -> list[dict[str, Any]]:
    """Inputs for the forward, made from its signature and the config: the likeliest first.

    The signature does not say a tensor's layout, so the later candidates are the other layouts
    models use: audio as ``(batch, channels, samples)`` or features as ``(batch, frames, bins)``,
    video as ``(batch, frames, channels, height, width)``, an image beside the text of a model
    that matches the two, decoder tokens for a model that needs them without saying so. A
    forward that asks for a patch grid (``grid_thw``) gets patch rows and a grid first. Inputs
    in :data:`_RECIPES` are made wherever the signature requires them, and a last candidate has
    every one the signature names (a forward that refuses to run without boxes or an image).
    """
    parameters = inspect.signature(model.forward).parameters
    main = getattr(model, "main_input_name", "input_ids")
    main = main[0] if isinstance(main, (list, tuple)) else main  # oneformer: pixels, then a task
    low, high = _token_range(config)
    image, channels = _side(config), _field(config, "num_channels", 3)
    pixels = _pixels(config)
    kwargs: dict[str, Any] = {}
    variants: list[dict[str, Any]] = []
    if main == "input_ids" or "input_ids" in parameters and main not in parameters:
        kwargs["input_ids"] = _tokens(config)
        if "pixel_values" in parameters:
            variants.append({"pixel_values": pixels})
    elif main == "pixel_values":
        kwargs["pixel_values"] = pixels
        frames = _field(config, "num_frames", 8)
        variants.append({"pixel_values": torch.randn(BATCH, frames, channels, image, image)})
    elif main == "input_values":
        kwargs["input_values"] = torch.randn(BATCH, 1600)
        variants.append({"input_values": torch.randn(BATCH, _field(config, "audio_channels", 1), 1600)})
    elif main == "input_features":
        bins = _field(config, "num_mel_bins", None) or _field(config, "feature_size", 80)
        frames = 2 * _field(config, "max_source_positions", 32)
        kwargs["input_features"] = torch.randn(BATCH, bins, frames)
        variants.append({"input_features": kwargs["input_features"].transpose(1, 2).contiguous()})
    elif main == "pixel_values_videos":
        frames = _field(config, "num_frames", None) or _field(config, "frames_per_clip", 8)
        kwargs[main] = torch.randn(BATCH, frames, channels, image, image)
    elif main == "past_values":  # a time series: (batch, context, channels)
        context = _field(config, "context_length", SEQUENCE)
        kwargs[main] = torch.randn(BATCH, context, _field(config, "num_input_channels", 1))
        variants.append({main: torch.randn(BATCH, context)})
    elif main in parameters:
        raise NotBuilt(f"no recipe for inputs named {main!r}")
    if "pixel_values" in parameters and "pixel_values" not in kwargs and "input_ids" not in kwargs:
        kwargs["pixel_values"] = pixels
    if "input_ids" in kwargs and "attention_mask" in parameters:
        kwargs["attention_mask"] = torch.ones(BATCH, SEQUENCE, dtype=torch.long)
    if "decoder_input_ids" in parameters:
        decoder = {"decoder_input_ids": torch.randint(low, high, (BATCH, 4))}
        if getattr(config, "is_encoder_decoder", False):
            kwargs.update(decoder)
        else:
            variants.append(decoder)
    if "use_cache" in parameters:
        kwargs["use_cache"] = False
    if not kwargs:
        raise NotBuilt("no input the catalogue knows how to make")
    candidates = [kwargs, *({**kwargs, **variant} for variant in variants)]
    # A model that reads a second input it cannot go without, sometimes without saying so in
    # its signature (text beside the image, boxes beside the words): it, from its name.
    made = {name: recipe for name, recipe in _RECIPES.items() if name in parameters}
    required = [
        name for name, p in parameters.items() if p.default is p.empty and p.kind in _NAMED and name in made
    ]  # fmt: skip
    missing = [name for name in made if name not in kwargs]
    if missing:  # every input it has a recipe for, each drawn below (None: not yet made)
        candidates.append({**kwargs, **dict.fromkeys(missing)})
    patches = _patches(parameters, config)
    for candidate in [*patches, *candidates]:
        for name in [*required, *(n for n, v in candidate.items() if v is None)]:
            if candidate.get(name) is None:
                candidate[name] = made[name](config, candidate)
    return [*patches, *candidates]


_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def _token_range(config: Any) -> tuple[int, int]:
    """Token ids to draw from: past the special ones where the vocabulary has room."""
    vocab = _field(config, "vocab_size", 64)
    return (3, min(vocab, 64)) if vocab > 8 else (0, vocab)


def _tokens(config: Any, _: dict[str, Any] | None = None) -> torch.Tensor:
    return torch.randint(*_token_range(config), (BATCH, SEQUENCE))


def _side(config: Any) -> int:
    image = _field(config, "image_size", IMAGE)
    return int(image[0] if isinstance(image, (list, tuple)) else image)


def _pixels(config: Any, _: dict[str, Any] | None = None) -> torch.Tensor:
    side = _side(config)
    return torch.randn(BATCH, _field(config, "num_channels", 3), side, side)


def _boxes(config: Any, made: dict[str, Any]) -> torch.Tensor:
    """Word boxes ``(x0, y0, x1, y1)`` on a 0-1000 page, one per token, each inside the page."""
    corner = torch.randint(0, 500, (BATCH, SEQUENCE, 2))
    return torch.cat([corner, corner + torch.randint(1, 500, (BATCH, SEQUENCE, 2))], -1)


def _features_mask(config: Any, made: dict[str, Any]) -> torch.Tensor:
    features = made.get("input_features")
    frames = features.shape[-1] if isinstance(features, torch.Tensor) else SEQUENCE
    return torch.ones(BATCH, frames, dtype=torch.long)


#: Inputs made by name wherever a forward asks for them: ``(config, inputs so far) -> tensor``.
_RECIPES: dict[str, Callable[[Any, dict[str, Any]], torch.Tensor]] = {
    "input_ids": _tokens,
    "qformer_input_ids": _tokens,
    "pixel_values": _pixels,
    "input_values": lambda config, _: torch.randn(BATCH, 1600),
    "bbox": _boxes,
    "visual_feats": lambda config, _: torch.randn(BATCH, 4, _field(config, "visual_feat_dim", WIDTH)),
    "visual_pos": lambda config, _: torch.rand(BATCH, 4, _field(config, "visual_pos_dim", 4)),
    "input_features_mask": _features_mask,
}


def _patches(parameters: Any, config: Any) -> list[dict[str, Any]]:
    """One image as the patch rows and ``(t, h, w)`` grid a Qwen-style vision tower reads, where it asks for a grid.

    The rows are the patches flattened (channels, then time, then the patch's pixels); the grid
    is a multiple of the tower's merge size on each side.
    """
    grid = next((name for name in ("grid_thw", "image_grid_thw") if name in parameters), None)
    if grid is None:
        return []
    patch = _field(config, "patch_size", 14)
    patch = patch[0] if isinstance(patch, (list, tuple)) else patch
    temporal = _field(config, "temporal_patch_size", 1)
    channels = _field(config, "in_channels", None) or _field(config, "num_channels", 3)
    merge = _field(config, "spatial_merge_size", None) or _field(config, "merge_size", 1)
    side = 2 * merge
    rows = torch.randn(side * side, channels * temporal * patch * patch)
    name = "hidden_states" if "hidden_states" in parameters else "pixel_values"
    found: dict[str, Any] = {name: rows, grid: torch.tensor([[1, side, side]])}
    if "merge_sizes" in parameters:
        found["merge_sizes"] = torch.tensor([merge])
    return [found]


def _model(model_type: str, config: Any, device: str) -> Any:
    cls = _model_class(model_type)
    torch.manual_seed(0)
    try:
        with _quiet(), torch.device(device):
            return cls(copy.deepcopy(config)).eval()
    except Exception as error:  # noqa: BLE001
        raise NotBuilt(f"model: {type(error).__name__}: {_short(error)}") from None


#: Which of an architecture's input candidates its forward runs with, found on the CPU once.
_CHOSEN: dict[str, int] = {}


def build(model_type: str, device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """``(model in eval mode, forward kwargs)`` for ``model_type``, seeded, on ``device``.

    The kwargs are the first candidate the plain forward runs with on the CPU (the first of all
    when none does), so a meta build gets the CPU build's inputs.
    """
    config = tiny_config(model_type)
    model = _model(model_type, config, device)
    torch.manual_seed(1)
    candidates = _inputs(model, config)
    if model_type not in _CHOSEN:
        probe = model if device == "cpu" else _model(model_type, config, "cpu")
        runs = (i for i, kwargs in enumerate(candidates) if plain_forward(probe, kwargs) is None)
        _CHOSEN[model_type] = next(runs, 0)
    kwargs = candidates[_CHOSEN[model_type]]
    if device != "cpu":
        kwargs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    return model, kwargs


def plain_forward(model: Any, kwargs: dict[str, Any]) -> str | None:
    """Why the untraced forward fails, or None when it runs.

    It runs on a copy: a forward may replace what no state dict holds (``wav2vec2-conformer``
    grows its non-persistent ``pe`` buffer to the input's length), and a model that kept that
    would trace differently afterwards.
    """
    try:
        with torch.no_grad(), _quiet():
            copy.deepcopy(model)(**kwargs)
    except Exception as error:  # noqa: BLE001
        return f"{type(error).__name__}: {_short(error)}"
    return None


def _short(error: BaseException, limit: int = 160) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def _quiet() -> Any:
    """transformers' warnings and prints, which say nothing about the tracer."""
    import transformers

    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        transformers.logging.set_verbosity(level)


Factory = Callable[[], tuple[Any, dict[str, Any]]]
