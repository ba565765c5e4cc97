"""`Qwen2_5_VLImageTextProcessor` (no video processor) behaves as Qwen2.5-VL's processor does on image+text.

The stock `Qwen2_5_VLProcessor` cannot be constructed without torchvision (its video processor), so the reference
is what its `__call__` is specified to do, composed here from the two parts it wraps: the image processor's
`pixel_values`/`image_grid_thw`, and the tokenizer applied to the text with every `<|image_pad|>` expanded to
`grid_t·grid_h·grid_w / merge_size²` pads.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import Qwen2_5_VLProcessor

from leverplus.tracks.vqa.data.images import load_image
from leverplus.tracks.vqa.models import prompting
from leverplus.tracks.vqa.models.qwen_processor import Qwen2_5_VLImageTextProcessor, load_processor

try:
    import torchvision  # noqa: F401

    HAVE_TORCHVISION = True
except ImportError:
    HAVE_TORCHVISION = False


@pytest.fixture(scope="module")
def processor_dir(tmp_path_factory, vqa_examples):
    from leverplus.models.tiny import build_tiny_qwen2_5_vl

    texts = [e.question for e in vqa_examples] + [e.answer for e in vqa_examples]
    return build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("qwen_proc"), texts * 4, seed=0)


@pytest.fixture(scope="module")
def processor(processor_dir):
    if HAVE_TORCHVISION:
        return Qwen2_5_VLImageTextProcessor.from_pretrained(str(processor_dir))
    return load_processor(str(processor_dir))


def expected_encoding(processor, text: str, images) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    pad = processor.image_token
    if images:
        enc = processor.image_processor(images=images, return_tensors="pt")
        pixels, grid = enc["pixel_values"], enc["image_grid_thw"]
    else:
        pixels, grid = torch.empty(0), torch.empty(0, 3, dtype=torch.long)
    pieces = text.split(pad)
    assert len(pieces) == len(images) + 1
    merge = processor.image_processor.merge_size
    expanded = pieces[0] + "".join(
        pad * (int(g.prod()) // merge**2) + piece for g, piece in zip(grid, pieces[1:])
    )
    return processor.tokenizer(expanded)["input_ids"], pixels, grid


def test_subclass_only_replaces_construction():
    own = set(vars(Qwen2_5_VLImageTextProcessor)) - {"__module__", "__doc__", "__qualname__", "__firstlineno__"}
    assert own <= {"__init__", "__static_attributes__"}
    assert Qwen2_5_VLImageTextProcessor.__call__ is Qwen2_5_VLProcessor.__call__
    assert Qwen2_5_VLImageTextProcessor.apply_chat_template is Qwen2_5_VLProcessor.apply_chat_template


@pytest.mark.skipif(HAVE_TORCHVISION, reason="with torchvision load_processor returns the stock processor")
def test_load_processor_falls_back_to_the_subclass(processor):
    assert type(processor) is Qwen2_5_VLImageTextProcessor
    assert not hasattr(processor, "video_processor") or processor.video_processor is None


@pytest.mark.parametrize("n_icds", [0, 1, 3])
@pytest.mark.parametrize("with_answer", [True, False])
def test_call_equals_image_processor_plus_tokenizer(processor, vqa_examples, n_icds, with_answer):
    icds, query = vqa_examples[1 : 1 + n_icds], vqa_examples[0]
    text = processor.apply_chat_template(
        prompting.conversation(icds, query, with_answer=with_answer),
        tokenize=False,
        add_generation_prompt=not with_answer,
    )
    images = [load_image(p) for p in prompting.images_in_order(icds, query)]
    got = processor(text=[text], images=images, return_tensors="pt")
    ids, pixels, grid = expected_encoding(processor, text, images)
    assert got["input_ids"][0].tolist() == ids
    torch.testing.assert_close(got["pixel_values"], pixels, rtol=0, atol=0)
    assert torch.equal(got["image_grid_thw"], grid)
    image_id = processor.image_token_id
    n_pad = int((got["input_ids"] == image_id).sum())
    assert n_pad == int(grid.prod(dim=1).sum()) // processor.image_processor.merge_size**2 > 0
    if "mm_token_type_ids" in got:
        assert torch.equal(got["mm_token_type_ids"].bool(), got["input_ids"] == image_id)


def test_batch_with_padding_equals_rows(processor, vqa_examples):
    rows = [([], vqa_examples[0]), (vqa_examples[1:3], vqa_examples[3])]
    texts = [
        processor.apply_chat_template(prompting.conversation(i, q, with_answer=True), tokenize=False) for i, q in rows
    ]
    images = [load_image(p) for i, q in rows for p in prompting.images_in_order(i, q)]
    got = processor(text=texts, images=images, return_tensors="pt", padding=True, padding_side="right")
    start = 0
    for b, (icds, _query) in enumerate(rows):
        n = len(icds) + 1
        ids, _, _ = expected_encoding(processor, texts[b], images[start : start + n])
        start += n
        assert got["input_ids"][b, : len(ids)].tolist() == ids
        assert got["attention_mask"][b].sum() == len(ids)
        assert np.all(got["input_ids"][b, len(ids) :].numpy() == processor.tokenizer.pad_token_id)


def test_save_load_round_trip(processor, vqa_examples, tmp_path):
    processor.save_pretrained(tmp_path)
    again = Qwen2_5_VLImageTextProcessor.from_pretrained(str(tmp_path))
    assert again.chat_template == processor.chat_template
    query = vqa_examples[0]
    text = processor.apply_chat_template(prompting.conversation([], query, with_answer=True), tokenize=False)
    image = [load_image(query.image)]
    a = processor(text=[text], images=image, return_tensors="pt")
    b = again(text=[text], images=image, return_tensors="pt")
    assert a["input_ids"].tolist() == b["input_ids"].tolist()
    torch.testing.assert_close(a["pixel_values"], b["pixel_values"], rtol=0, atol=0)
