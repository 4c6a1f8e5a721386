"""qwenlite.Processor against transformers' Qwen2_5_VLProcessor on the same checkpoint and messages."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from qwenlite import Processor
from qwenlite import preprocessing as pp
from qwenlite.video_io import Video, load_video


@pytest.fixture(scope="module")
def processor(ckpt) -> Processor:
    return Processor.from_pretrained(ckpt)


@pytest.fixture(scope="module")
def small() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8))


def _user(*content) -> list[dict]:
    return [{"role": "user", "content": list(content)}]


def _image(image) -> dict:
    return {"type": "image", "image": image}


def _text(text: str) -> dict:
    return {"type": "text", "text": text}


def _compare(ours: dict, ref, atol: float = 1e-5) -> None:
    """Same keys; integer tensors exactly equal, float tensors within atol."""
    assert set(ours) == set(ref.keys()), set(ours) ^ set(ref.keys())
    for key, value in ref.items():
        assert ours[key].shape == value.shape, key
        if value.is_floating_point():
            assert (ours[key] - value).abs().max() <= atol, key
        else:
            assert torch.equal(ours[key], value), key


def _hf_prompt(hf_processor, messages) -> str:
    return hf_processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _hf_video_kwargs(video: Video) -> dict:
    """What makes transformers' video processor see the same frames with qwen-vl-utils' frame budget."""
    cap = pp.video_max_pixels(len(video.indices) + len(video.indices) % 2)
    return {
        "video_metadata": [
            {"fps": video.video_fps, "frames_indices": video.indices, "total_num_frames": video.total_frames}
        ],
        "videos_kwargs": {
            "size": {"shortest_edge": pp.VIDEO_MIN_PIXELS, "longest_edge": cap},
            "do_sample_frames": False,
            "cap_pixels_per_frame": False,
        },
    }


MESSAGES = {
    "text only": [{"role": "user", "content": "Hello there."}],
    "system + multi-turn": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [_text("Hi")]},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": [_image("x.jpg"), _text("What is it?")]},
    ],
    "image and video items": _user(_image("a.jpg"), {"type": "video", "video": "v.mp4"}, _text("Compare.")),
    "image_url key": _user({"image_url": "http://x/y.png"}, _text("?")),
}


@pytest.mark.parametrize("name", list(MESSAGES))
def test_chat_template_text_equals_transformers(name, processor, hf_processor):
    messages = MESSAGES[name]
    assert processor.apply_chat_template(messages) == _hf_prompt(hf_processor, messages)
    no_prompt = hf_processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    assert processor.apply_chat_template(messages, add_generation_prompt=False) == no_prompt


def test_single_image(processor, hf_processor, photo):
    messages = _user(_image(photo), _text("Describe this image."))
    ref = hf_processor(text=[_hf_prompt(hf_processor, messages)], images=[photo], return_tensors="pt")
    ours = processor.from_messages(messages)
    _compare(ours, ref)
    tokens = int((ours["input_ids"] == processor.image_token_id).sum())
    assert tokens == int(ours["image_grid_thw"].prod()) // 4


def test_two_images(processor, hf_processor, photo, small):
    messages = _user(_image(photo), _text("and"), _image(small), _text("Which is larger?"))
    ref = hf_processor(text=[_hf_prompt(hf_processor, messages)], images=[photo, small], return_tensors="pt")
    _compare(processor.from_messages(messages), ref)


def test_image_and_video(processor, hf_processor, small, video_path):
    messages = _user(_image(small), {"type": "video", "video": str(video_path)}, _text("What happens?"))
    video = load_video(video_path)
    ref = hf_processor(
        text=[_hf_prompt(hf_processor, messages)],
        images=[small],
        videos=[video.frames],
        return_tensors="pt",
        **_hf_video_kwargs(video),
    )
    ours = processor.from_messages(messages)
    _compare(ours, ref)
    assert ours["second_per_grid_ts"].tolist() == [1.0]  # 2 frames per patch at 2 sampled frames per second


def test_video_options_in_a_message(processor, hf_processor, video_path):
    messages = _user({"type": "video", "video": str(video_path), "nframes": 6}, _text("Go."))
    video = load_video(video_path, nframes=6)
    ref = hf_processor(
        text=[_hf_prompt(hf_processor, messages)], videos=[video.frames], return_tensors="pt", **_hf_video_kwargs(video)
    )
    _compare(processor.from_messages(messages), ref)


def test_batch_of_two_prompts_left_padded(processor, hf_processor, photo, small):
    long = _user(_image(photo), _text("and"), _image(small), _text("Compare them in detail, please."))
    short = _user(_image(small), _text("Hi"))
    texts = [_hf_prompt(hf_processor, long), _hf_prompt(hf_processor, short)]
    images = [photo, small, small]
    ref = hf_processor(text=texts, images=images, padding=True, padding_side="left", return_tensors="pt")
    ours = processor.from_messages([long, short])
    _compare(ours, ref)
    assert ours["attention_mask"][1, 0] == 0 and ours["attention_mask"][:, -1].all()  # padding on the left
    right = hf_processor(text=texts, images=images, padding=True, padding_side="right", return_tensors="pt")
    _compare(processor(text=texts, images=images, padding_side="right"), right)


def test_call_with_text_images_videos(processor, hf_processor, small, video_path):
    """The plain call: prompt text holding one pad per item, plus the raw items."""
    prompt = "<|vision_start|><|image_pad|><|vision_end|>then<|vision_start|><|video_pad|><|vision_end|>"
    video = load_video(video_path)
    ref = hf_processor(
        text=[prompt], images=[small], videos=[video.frames], return_tensors="pt", **_hf_video_kwargs(video)
    )
    _compare(processor(text=prompt, images=[small], videos=[video_path]), ref)
    _compare(processor(text=prompt, images=[pp.preprocess_image(small)], videos=[video]), ref)


def test_the_same_dict_runs_both_models(processor, ours, ref, small, video_path):
    # a short, small clip: 2 temporal patches whose time ids (0, 4) stay below max(h, w) / merge, where the
    # released rope rule and transformers 5.x's agree (see rope_index.py)
    clip = {"type": "video", "video": str(video_path), "nframes": 4, "min_pixels": 3136, "max_pixels": 40000}
    inputs = processor.from_messages(_user(_image(small), clip, _text("What?")))
    with torch.no_grad():
        ours_logits = ours(**inputs).logits
        ref_logits = ref(**inputs).logits
    assert ours_logits.shape == ref_logits.shape
    assert (ours_logits - ref_logits).abs().max() <= 1e-4


def test_from_pretrained_reads_chat_template_json(ckpt, tmp_path, processor):
    import json

    for f in ckpt.iterdir():
        if f.name not in ("chat_template.jinja", "model.safetensors"):
            shutil.copy(f, tmp_path / f.name)
    # marked, so the tokenizer's own copy of the template (also in tokenizer_config.json) cannot pass for it
    from_json = processor.chat_template + "{# from chat_template.json #}"
    (tmp_path / "chat_template.json").write_text(json.dumps({"chat_template": from_json}))
    other = Processor.from_pretrained(tmp_path)
    assert other.chat_template == from_json and other.config == processor.config


def test_transformers_style_keywords(processor, hf_processor, photo_path):
    """The call lines a learner copies from transformers work unchanged on the same inputs."""
    ours = processor
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Who?"}]}]
    text = ours.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == hf_processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    mine = ours(text=[text], images=[str(photo_path)], return_tensors="pt")
    theirs = hf_processor(text=[text], images=[Image.open(photo_path)], return_tensors="pt")
    assert torch.equal(mine["input_ids"], theirs["input_ids"])
    with pytest.raises(ValueError, match="return_tensors='np'"):
        ours(text=[text], images=[str(photo_path)], return_tensors="np")


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("", ValueError, r"text \[0\] is the empty string: a prompt needs at least one token"),
        (["Hi", ""], ValueError, r"text \[1\] is the empty string"),
        ([], ValueError, "text is an empty list: give at least one prompt"),
        (None, TypeError, "text must be a str or a list of str .*got NoneType"),
        (b"Hi", TypeError, "text must be a str or a list of str .*got bytes"),
        (["Hi", 3], TypeError, "text must be a str or a list of str .*got list"),
    ],
    ids=["empty", "one-empty", "no-prompts", "none", "bytes", "not-str"],
)
def test_text_that_is_not_prompts_is_refused_by_name(processor, text, error, message):
    with pytest.raises(error, match=message):
        processor(text)


@pytest.mark.parametrize("limits", [(20000, 50000), (3136, 12544), (100000, 200000)], ids=str)
def test_call_time_min_max_pixels_equal_transformers_for_images(limits, processor, hf_processor, photo, small):
    """transformers' processor takes min_pixels / max_pixels at call time (deprecated, still honoured in 5.x)."""
    text = "<|vision_start|><|image_pad|><|vision_end|> and <|vision_start|><|image_pad|><|vision_end|>"
    ours = processor(text=text, images=[photo, small], min_pixels=limits[0], max_pixels=limits[1])
    with pytest.warns(FutureWarning, match="min_pixels"):
        ref = hf_processor(
            text=[text], images=[photo, small], min_pixels=limits[0], max_pixels=limits[1], return_tensors="pt"
        )
    assert torch.equal(ours["image_grid_thw"], ref["image_grid_thw"])
    assert torch.equal(ours["input_ids"], ref["input_ids"])
    assert (ours["pixel_values"] - ref["pixel_values"]).abs().max() <= 1e-5


@pytest.mark.parametrize("limits", [(3136, 50000), (20000, 100000)], ids=str)
def test_call_time_min_max_pixels_equal_qwen_vl_utils_for_videos(limits, processor, video_path):
    """For a video they are qwen-vl-utils' per-video keys (the per-frame budget), as in a message."""
    from qwenlite_course.reference import qwen_vl_utils_fetch_video

    theirs, _, _ = qwen_vl_utils_fetch_video(video_path, min_pixels=limits[0], max_pixels=limits[1])
    ours = processor(text="<|video_pad|>", videos=[str(video_path)], min_pixels=limits[0], max_pixels=limits[1])
    t, h, w = ours["video_grid_thw"][0].tolist()
    assert (t * 2, h * 14, w * 14) == (theirs.shape[0], theirs.shape[2], theirs.shape[3])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("modality", ["image", "video"])
def test_patches_holding_nan_or_inf_are_refused(bad, modality, processor, small, video_path):
    patches = pp.preprocess_image(small) if modality == "image" else pp.preprocess_video(load_video(video_path))
    patches.pixel_values[3, 7] = bad
    kwargs = {"images": [patches]} if modality == "image" else {"videos": [patches]}
    with pytest.raises(ValueError, match=rf"{modality} Patches: pixel_values hold 1 NaN or infinite value"):
        processor(text=f"<|{modality}_pad|>", **kwargs)


@pytest.mark.parametrize("seconds", [float("nan"), -1.0, 0.0], ids=str)
def test_video_patches_with_bad_second_per_grid_t_are_refused(seconds, processor, video_path):
    patches = pp.preprocess_video(load_video(video_path, nframes=4))
    patches.second_per_grid_t = seconds
    with pytest.raises(ValueError, match=rf"second_per_grid_t must be a finite number of seconds > 0, got {seconds}"):
        processor(text="<|video_pad|>", videos=[patches])


def test_video_start_and_end_in_a_message(processor, video_path):
    item = {"type": "video", "video": str(video_path), "video_start": 1.0, "video_end": 3.0, "nframes": 4}
    inputs = processor.from_messages([{"role": "user", "content": [item]}])
    expected = pp.preprocess_video(load_video(video_path, video_start=1.0, video_end=3.0, nframes=4))
    assert torch.equal(inputs["video_grid_thw"][0], expected.grid_thw)
    assert inputs["second_per_grid_ts"].tolist() == [expected.second_per_grid_t]


# ---------------------------------------------------------------- bad input: refused by name


def test_processor_pads_and_items_must_agree(processor, small_array):
    with pytest.raises(ValueError, match=r"the text holds 1 <\|image_pad\|> token\(s\) but 2 image\(s\) were given"):
        processor(text="<|image_pad|>", images=[small_array, small_array])
    with pytest.raises(ValueError, match=r"the text holds 0 <\|image_pad\|> token\(s\) but 1 image\(s\)"):
        processor(text="an image but no placeholder", images=[small_array])
    with pytest.raises(ValueError, match=r"the text holds 1 <\|image_pad\|> token\(s\) but 0 image\(s\)"):
        processor(text="a placeholder <|image_pad|> but no image")
    with pytest.raises(ValueError, match=r"the text holds 0 <\|video_pad\|> token\(s\) but 1 video\(s\)"):
        processor(text="no pads", videos=[[np.zeros((28, 28, 3), np.uint8)] * 2])


def test_processor_refuses_bad_options_and_items(processor, small_array):
    with pytest.raises(ValueError, match="padding_side must be 'left' or 'right', got 'middle'"):
        processor(text="hi", padding_side="middle")
    with pytest.raises(ValueError, match="return_tensors='np': qwenlite returns torch tensors only"):
        processor(text="hi", return_tensors="np")
    with pytest.raises(ValueError, match="image content item .* has no 'image' .* or 'image_url'"):
        processor.from_messages([{"role": "user", "content": [{"type": "image"}]}])
    with pytest.raises(ValueError, match="video content item .* has no 'video'"):
        processor.from_messages([{"role": "user", "content": [{"type": "video"}]}])
    image_patches = pp.preprocess_image(small_array)  # an image's Patches handed over as a video
    with pytest.raises(ValueError, match="a video's Patches need second_per_grid_t: build them with preprocess_video"):
        processor(text="<|video_pad|>", videos=[image_patches])


def test_processor_folder_without_tokenizer(tmp_path, ckpt):
    shutil.copy(ckpt / "preprocessor_config.json", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"has no tokenizer files \(tokenizer.json"):
        Processor.from_pretrained(tmp_path)
