"""lm-eval integration: the `nara` model type runs local tasks on a tiny in-code model, offline."""

import json
import os
import string

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
lm_eval = pytest.importorskip("lm_eval")
torch = pytest.importorskip("torch")

from lm_eval.api.registry import get_model  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402

from nara.evaluation.lm_eval_model import NaraLM  # noqa: E402
from nara.models import LLaDAModelLM, tiny_config  # noqa: E402


def char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per printable character; ids below the tiny model's EOS (126) and mask (127)."""
    chars = [c for c in string.printable if c not in "\r\x0b\x0c"]
    vocab = {c: i for i, c in enumerate(chars)} | {"<unk>": 124, "<eos>": 126, "<mask>": 127}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="<unk>",
        eos_token="<eos>",
        pad_token="<eos>",
        mask_token="<mask>",
    )


@pytest.fixture(scope="module")
def nara_lm():
    torch.manual_seed(0)
    model = LLaDAModelLM(tiny_config()).eval()
    return NaraLM(
        model=model,
        tokenizer=char_tokenizer(),
        mask_token_id=127,
        gen_length=8,
        steps=8,
        mc_samples=4,
        batch_size=2,
    )


def write_tasks(tmp_path):
    data = tmp_path / "data.jsonl"
    rows = [
        {"question": f"{i}+{i}=", "answer": str(2 * i), "choices": [str(2 * i), "x"], "label": 0}
        for i in range(3)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = (
        f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
    )
    (tmp_path / "gen.yaml").write_text(
        "task: nara_local_gen\n" + common + "output_type: generate_until\n"
        "doc_to_text: '{{question}}'\ndoc_to_target: '{{answer}}'\n"
        "generation_kwargs:\n  until: ['\\n']\n  max_gen_toks: 8\n"
        "metric_list:\n  - metric: exact_match\n"
    )
    (tmp_path / "mc.yaml").write_text(
        "task: nara_local_mc\n" + common + "output_type: multiple_choice\n"
        "doc_to_text: '{{question}}'\ndoc_to_choice: '{{choices}}'\ndoc_to_target: '{{label}}'\n"
        "metric_list:\n  - metric: acc\n"
    )


def test_registered_under_nara():
    assert get_model("nara") is NaraLM


def test_local_tasks_run_through_nara_sampler_and_likelihood(tmp_path, nara_lm):
    write_tasks(tmp_path)
    results = lm_eval.simple_evaluate(
        model=nara_lm,
        tasks=["nara_local_gen", "nara_local_mc"],
        task_manager=TaskManager(include_path=str(tmp_path)),
        limit=3,
    )["results"]
    assert 0.0 <= results["nara_local_gen"]["exact_match,none"] <= 1.0
    assert 0.0 <= results["nara_local_mc"]["acc,none"] <= 1.0


def test_generate_until_cuts_at_stop_strings(nara_lm):
    class Req:
        args = ("1+1=", {"until": ["\n"], "max_gen_toks": 8})

    (text,) = nara_lm.generate_until([Req()])
    assert "\n" not in text and len(text) <= 8


def test_rolling_loglikelihood_explains_itself(nara_lm):
    with pytest.raises(NotImplementedError, match="masked diffusion"):
        nara_lm.loglikelihood_rolling([])


def test_sampler_options_reach_nara_generate(nara_lm):
    """sampler / top_k / alg_temp given to NaraLM give exactly nara.generate's answer with them."""
    from nara.data.collate import encode_prompt_batch
    from nara.diffusion import generate
    from nara.evaluation.runner import batch_seed

    options = {"sampler": "dream", "top_k": 3, "alg_temp": 0.5, "temperature": 0.7}
    lm = NaraLM(
        model=nara_lm.model, tokenizer=nara_lm.tokenizer, mask_token_id=127, steps=8, **options
    )
    prompts = ["1+1=", "22+3="]
    ids, mask = encode_prompt_batch(lm.tokenizer, prompts, chat_template="auto")
    expected = generate(
        lm.model,
        ids,
        mask,
        mask_token_id=127,
        gen_length=8,
        steps=8,
        eos_token_id=lm.tokenizer.eos_token_id,
        generator=torch.Generator().manual_seed(batch_seed(0, prompts, 8)),
        **options,
    )
    assert lm._generate(prompts, 8) == lm.tokenizer.batch_decode(expected, skip_special_tokens=True)
    llada = lm.tokenizer.batch_decode(
        generate(lm.model, ids, mask, mask_token_id=127, gen_length=8, steps=8, eos_token_id=126),
        skip_special_tokens=True,
    )
    greedy = NaraLM(model=lm.model, tokenizer=lm.tokenizer, mask_token_id=127, steps=8)
    assert greedy._generate(prompts, 8) == llada  # no sampler: the family's (LLaDA's)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sampler": "ar"}, "sampler must be one of ('llada', 'dream', 'mdlm')"),
        ({"top_p": 1.5}, "top_p must lie in (0, 1], got 1.5"),
        ({"top_k": 0}, "top_k must be an int >= 1, got 0"),
        ({"alg_temp": -1}, "alg_temp must be >= 0"),
    ],
)
def test_bad_sampler_options_fail_before_any_model_loads(kwargs, message):
    # "nowhere" is no model: the settings are refused before load_model would fail on it
    with pytest.raises(ValueError) as info:
        NaraLM(pretrained="nowhere", **kwargs)
    assert message in str(info.value)
