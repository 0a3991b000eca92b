"""Evaluation machinery on a tiny random llama (fast): reversibility, LoRA, cost, sweeps, calibration, reports."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

import steerlab
from steerlab.engine.condition import Condition
from steerlab.errors import DataError, SteerlabError
from steerlab.evaluate import adaptations, calibrate, measure, report, reversibility
from steerlab.evaluate.concept import validate
from steerlab.evaluate.cost import counting
from steerlab.evaluate.executors import InProcessExecutor, make_executor
from steerlab.evaluate.refusal_detect import refusal_detector
from steerlab.evaluate.sweep import Cell, SweepSpec, grid, heatmap, run_sweep, table
from steerlab.evaluate.tasks import Budget, Task
from steerlab.vector import SteeringVector
from tiny_models import HIDDEN, LAYERS, build, one_thread, tiny_arena_config

PROBES = ("hello there", "a b c d e f", "the cat sat")


@pytest.fixture(scope="module")
def tiny():
    with one_thread():
        model, tok = build("llama")
        yield steerlab.from_model(model, tok, model_id="tiny-llama")


@pytest.fixture(scope="module")
def vector():
    torch.manual_seed(1)
    return SteeringVector(
        {i: torch.randn(HIDDEN) for i in range(LAYERS)},
        model_id="tiny-llama",
        norms=dict.fromkeys(range(LAYERS), 1.0),
    )


# ------------------------------------------------------------------------------------------- reversibility


def test_clean_steering_is_reversible(tiny, vector):
    steer = adaptations.steering("v", [steerlab.Steering(vector, strength=2.0, layers=[1])])
    rep = reversibility.check_adaptation(tiny, steer, PROBES)
    assert rep.passed, rep.as_dict()


def test_leaked_hook_is_caught(tiny):
    handles = []

    def leak(lm):
        block = lm.anatomy.blocks[1].module
        handles.append(
            block.register_forward_hook(
                lambda m, a, out: (out[0] + 1.0, *out[1:]) if isinstance(out, tuple) else out + 1.0
            )
        )

    try:
        rep = reversibility.check(tiny, leak, PROBES)
    finally:
        for h in handles:
            h.remove()
    assert not rep.passed
    assert rep.leaked_hooks and not rep.logits_identical
    assert rep.weights_identical  # a hook does not touch weights: the census and logits catch it


def test_silent_leaked_hook_is_caught_by_census(tiny):
    """A hook that changes nothing still counts as a leak: it will cost time and may act later."""
    handles = []
    try:
        rep = reversibility.check(
            tiny, lambda lm: handles.append(lm.model.register_forward_hook(lambda *a: None)), PROBES
        )
    finally:
        for h in handles:
            h.remove()
    assert rep.logits_identical and not rep.passed and rep.leaked_hooks == {"<root>": 1}


def _nonzero_adapter(lm):
    from steerlab.evaluate.lora import LoraAdapter, _config, _injected

    torch.manual_seed(0)
    with _injected(lm.model, _config(2, 4.0, ["q_proj", "v_proj"])):
        state = {n: torch.randn_like(p) * 0.5 for n, p in lm.model.named_parameters() if "lora_" in n}
    return LoraAdapter(2, 4.0, ["q_proj", "v_proj"], state)


def test_lora_unmerged_use_is_exact_and_changes_outputs(tiny):
    adapter = _nonzero_adapter(tiny)
    lora = adaptations.Adaptation("lora", "lora", lora=adapter)
    before = tiny.logits(list(PROBES))
    with lora.active(tiny) as lm:
        during = lm.logits(list(PROBES))
    assert not torch.allclose(before, during)
    rep = reversibility.check_adaptation(tiny, lora, PROBES)
    assert rep.passed, rep.as_dict()


def test_merged_and_never_unmerged_adapter_is_caught(tiny):
    from steerlab.evaluate.lora import _config

    adapter = _nonzero_adapter(tiny)
    original = {n: p.detach().clone() for n, p in tiny.model.named_parameters()}

    def merge_and_forget(lm):
        from peft.tuners.lora import LoraModel

        tuner = LoraModel(lm.model, _config(adapter.rank, adapter.alpha, adapter.targets), "default")
        params = dict(lm.model.named_parameters())
        with torch.no_grad():
            for k, v in adapter.state.items():
                params[k].copy_(v)
        tuner.merge_and_unload()  # folds the deltas into the weights and drops the adapter layers

    try:
        rep = reversibility.check(tiny, merge_and_forget, PROBES)
        assert not rep.passed
        assert not rep.weights_identical and not rep.logits_identical
        assert not rep.leaked_hooks
    finally:
        with torch.no_grad():
            for n, p in tiny.model.named_parameters():
                p.copy_(original[n])
                p.requires_grad_(True)  # peft froze the base weights
    assert reversibility.check(tiny, lambda lm: None, PROBES).passed


def test_merge_round_trip_error_is_small_but_reported(tiny):
    from steerlab.evaluate.lora import merge_round_trip_error

    original = {n: p.detach().clone() for n, p in tiny.model.named_parameters()}
    try:
        err = merge_round_trip_error(tiny, _nonzero_adapter(tiny))
        assert 0.0 <= err < 1e-4
    finally:
        with torch.no_grad():
            for n, p in tiny.model.named_parameters():
                p.copy_(original[n])


def test_train_lora_lowers_loss_and_counts_passes(tiny):
    from steerlab.evaluate.lora import train_lora

    examples = [(f"say {i}:", "yes yes yes") for i in range(6)]
    h0 = reversibility.weight_hash(tiny.model)
    adapter, cost = train_lora(tiny, examples, rank=2, epochs=4, lr=5e-2, batch_size=3)
    assert cost["forward_passes"] == cost["backward_passes"] == 8
    assert cost["loss_last"] < cost["loss_first"]
    assert reversibility.weight_hash(tiny.model) == h0  # training leaves the base model untouched
    assert not any("lora_" in n for n, _ in tiny.model.named_parameters())
    assert adapter.state and cost["trainable_parameters"] > 0


def test_counting_counts_forwards_and_backwards(tiny):
    ids = torch.tensor([[1, 5, 6, 7]])
    assert all(p.requires_grad for p in tiny.model.parameters())
    with counting(tiny.model) as c:
        with torch.no_grad():
            tiny.model(input_ids=ids)
        tiny.model(input_ids=ids).logits.sum().backward()
    tiny.model.zero_grad(set_to_none=True)
    assert c["forward_passes"] == 2 and c["backward_passes"] == 1 and c["seconds"] > 0
    assert not reversibility.installed_hooks(tiny.model)


def test_hook_census_counts_ours_but_not_transformers_own():
    """transformers keeps output-capturing hooks after ``output_hidden_states=True``; they are part of
    the model (counting them made a Ray worker refuse to score), but any hook we add is counted."""
    model, _ = build("llama")
    with torch.no_grad():
        model(input_ids=torch.tensor([[1, 5, 6]]), output_hidden_states=True)
    assert not reversibility.installed_hooks(model)
    handle = model.model.layers[1].register_forward_hook(lambda m, a, o: None)
    try:
        assert reversibility.installed_hooks(model) == {"model.layers.1": 1}
    finally:
        handle.remove()


# ---------------------------------------------------------------------------------------- measurement


def test_kl_is_zero_for_baseline_and_positive_when_steered(tiny, vector):
    kl0 = measure.kl_on_prompts(tiny, adaptations.baseline(), list(PROBES))
    assert np.allclose(kl0, 0.0)
    steer = adaptations.steering("v", [steerlab.Steering(vector, strength=3.0, layers=[1])])
    assert (measure.kl_on_prompts(tiny, steer, list(PROBES)) > 0).all()


def test_completion_nll_matches_a_manual_forward(tiny):
    sums, counts = measure.completion_nll(tiny, ["hi"], ["abc"])
    head = tiny.encode(tiny.chat("hi"))
    tail = tiny.tokenizer("abc", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = tiny.model(input_ids=torch.tensor([head + tail])).logits[0]
    logp = torch.log_softmax(logits.double(), -1)
    manual = -sum(float(logp[len(head) - 1 + i, t]) for i, t in enumerate(tail))
    assert counts[0] == len(tail) and sums[0] == pytest.approx(manual, rel=1e-5)


def test_prompting_renders_instruction_and_shots(tiny):
    p = adaptations.prompting("p", "Be nice.", [("q1", "a1")])
    text = p.render(tiny, "q2")
    assert text.index("Be nice.") < text.index("q1") < text.index("a1") < text.index("q2")


def test_combine_stacks_prompts_and_steerings(vector):
    a = adaptations.prompting("p", "Be nice.", [("q", "a")])
    b = adaptations.steering("v", [steerlab.Steering(vector, strength=1.0, layers=[0])])
    c = adaptations.combine("p+v", [a, b])
    assert c.system == "Be nice." and len(c.steering) == 1 and c.shots == [("q", "a")]


# ------------------------------------------------------------------------------------- sweeps, executors


class RecordingExecutor(InProcessExecutor):
    def __init__(self, lm):
        super().__init__(lm)
        self.calls = 0

    def map(self, fn, items, on_result=None):
        self.calls += len(items)
        return super().map(fn, items, on_result)


def test_sweep_resumes_from_its_state_file(tiny, vector, tmp_path):
    spec = SweepSpec(vector, None, neutral=list(PROBES), fluency_prompts=["x y"], max_new_tokens=3)
    cells = grid(["1", "0-2"], [0.5, 1.0])
    ex = RecordingExecutor(tiny)
    rows = run_sweep(tiny, spec, cells, executor=ex, state=tmp_path / "s.json")
    assert ex.calls == 5  # baseline + 4 cells
    assert [r["key"] for r in rows] == ["baseline", "1@0.5", "1@1", "0-2@0.5", "0-2@1"]
    assert all(r["kl"] >= 0 for r in rows) and rows[0]["kl"] == pytest.approx(0.0, abs=1e-9)
    assert rows[0]["ppl_ratio"] == pytest.approx(1.0)
    ex2 = RecordingExecutor(tiny)
    again = run_sweep(tiny, spec, [*cells, Cell((2,), 0.5)], executor=ex2, state=tmp_path / "s.json")
    assert ex2.calls == 1 and len(again) == 6
    md = table(again, ("kl", "ppl_ratio"))
    assert "| 0-2 | 0.5 |" in md
    png = heatmap(again, "kl", tmp_path / "kl.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    # a state file left by a sweep of another vector (or the same one gated) is not resumed
    other = replace(vector, data_hash="another data set")
    ex3 = RecordingExecutor(tiny)
    fresh = run_sweep(tiny, replace(spec, vector=other), cells, executor=ex3, state=tmp_path / "s.json")
    assert ex3.calls == 5 and [r["key"] for r in fresh] == [r["key"] for r in rows]
    gate = Condition(other.directions[0], layer=0, threshold=-2.0, model_id=tiny.model_id)
    ex4 = RecordingExecutor(tiny)
    run_sweep(
        tiny, replace(spec, vector=other, condition=gate), cells, executor=ex4, state=tmp_path / "s.json"
    )
    assert ex4.calls == 5


def test_calibrate_choose_respects_budgets():
    rows = [
        {"key": "baseline", "strength": 0.0, "effect": 0.1, "kl": 0.0},
        {"key": "a", "strength": 0.5, "effect": 0.4, "kl": 0.05, "ppl_ratio": 1.2},
        {"key": "b", "strength": 1.0, "effect": 0.9, "kl": 0.5, "ppl_ratio": 1.3},  # KL over budget
        {"key": "c", "strength": 0.8, "effect": 0.6, "kl": 0.08, "ppl_ratio": 2.0},  # ppl over budget
        {"key": "d", "strength": 0.3, "effect": 0.4, "kl": 0.01, "ppl_ratio": 1.0},  # ties with a, weaker
    ]
    assert calibrate.choose(rows)["key"] == "d"
    assert calibrate.choose(rows, max_kl=1.0)["key"] == "b"
    assert calibrate.choose(rows, max_kl=0.001) is None
    assert calibrate.choose(rows, sign=-1.0)["key"] == "d"


def test_calibrate_writes_vector_defaults(tiny, vector):
    vec = SteeringVector(dict(vector.directions), model_id="tiny-llama", norms=dict(vector.norms))

    class Flat:
        name, kind = "flat", "ab"

        def effect(self, lm, adaptation, which, limit=None, max_new_tokens=0):
            from steerlab.evaluate.metrics import bootstrap
            from steerlab.evaluate.tasks import EffectResult

            strength = adaptation.settings.get("strength", 0.0)
            return EffectResult(np.array([strength, strength]), bootstrap([strength, strength]))

    spec = SweepSpec(vec, Flat(), neutral=list(PROBES))
    cells = grid(["1"], [0.5, 1.0, 1e3, 1e4])
    kls = {r["strength"]: r["kl"] for r in run_sweep(tiny, spec, cells, with_effect=False)}
    assert kls[0.5] < kls[1e3] < kls[1e4]
    budget = (kls[1.0] + kls[1e3]) / 2
    result = calibrate.calibrate(tiny, spec, cells, max_kl=budget)
    assert result.choice is not None and result.choice["strength"] == 1.0
    assert vec.defaults == {"strength": 1.0, "layers": [1], "op": "add", "unit": "norm"}
    # the ladder stops at the first cell past the budget (generated from, to show the cliff); the
    # stronger one is never measured at all
    rows = {r["strength"]: r for r in result.rows}
    assert "effect" in rows[1e3] and 1e4 not in rows


def test_in_process_executor_keeps_order_and_reports(tiny):
    seen = []
    ex = make_executor("in-process", tiny)
    out = ex.map(lambda lm, x: x * 2, [1, 2, 3], on_result=lambda i, r: seen.append((i, r)))
    assert out == [2, 4, 6] and seen == [(0, 2), (1, 4), (2, 6)]
    with pytest.raises(SteerlabError):
        make_executor("carrier-pigeon", tiny)


# ---------------------------------------------------------------------------------- scorers and tasks


def test_phrase_refusal():
    phrase_refusal, name = refusal_detector()
    assert "is_refusal" in name
    assert phrase_refusal("I'm sorry, but I can't help with that.")
    assert phrase_refusal("As an AI language model I cannot do this")
    assert not phrase_refusal("Sure! Here is a recipe for pancakes.")
    assert not phrase_refusal("x" * 200 + " I cannot")  # only the opening counts


def test_concept_validation_by_hand():
    v = validate([0.9, 0.6, 0.4], [0.1, 0.2])
    assert v["accuracy"] == pytest.approx(4 / 5)
    assert v["auc"] == pytest.approx(1.0)
    with pytest.raises(DataError):
        validate([], [0.1])


def test_task_split_limit_keeps_both_labels():
    t = Task("s", "safety", [], [], "", [], eval_prompts=list("abcdef"), eval_labels=[1, 1, 1, 0, 0, 0])
    prompts, labels, _ = t.split("eval", limit=2)
    assert prompts == ["a", "d"] and labels == [1, 0]
    with pytest.raises(DataError):
        t.split("test")
    with pytest.raises(DataError):
        Budget.preset("huge")


# -------------------------------------------------------------------------------------------- report


def _fake_result(name, family, value, kl, *, calibration=None):
    est = {"value": value, "low": value - 0.05, "high": value + 0.05, "n": 4, "method": "bootstrap"}
    return {
        "method": name,
        "family": family,
        "cost": {"seconds": 1.0, "forward_passes": 2, "backward_passes": 0},
        "eval": {"estimate": est, "per_example": [value] * 4, "generations": ["text"] * 4, "extra": {}},
        "heldout": {"estimate": est, "per_example": [value] * 4, "generations": None, "extra": {}},
        "kl": {"mean": kl},
        "ppl": 5.0,
        "tokens_per_second": 10.0,
        "extra_prompt_tokens": 0,
        "reversibility": {"passed": True},
        "settings": {},
        "calibration": calibration,
    }


def test_report_is_honest_when_prompting_wins(tmp_path):
    cal = {
        "rows": [
            {"key": "baseline", "layer_label": "1", "strength": 0.0, "effect": 0.2, "kl": 0.0},
            {"key": "1@0.5", "layer_label": "1", "strength": 0.5, "effect": 0.3, "kl": 0.05},
        ],
        "choice": {"layer_label": "1", "strength": 0.5},
        "within_budget": True,
        "max_kl": 0.1,
        "max_ppl_ratio": 1.5,
        "notes": [],
    }
    results = {
        "task": {
            "name": "t",
            "kind": "ab",
            "train_pairs": 4,
            "lora_examples": 4,
            "shots": 2,
            "eval": 4,
            "heldout": 4,
            "heldout_name": "other",
            "chance": 0.5,
            "notes": [],
        },
        "config": {"max_kl": 0.1},
        "main": {
            "baseline": _fake_result("baseline", "none", 0.5, 0.0),
            "prompting": _fake_result("prompting", "prompting", 0.9, 0.2),
            "mean_diff": _fake_result("mean_diff", "steering", 0.52, 0.05, calibration=cal),
        },
        "efficiency": {
            "a": {"method": "mean_diff", "n": 4, "seed": 0, "effect": 0.5},
            "b": {"method": "mean_diff", "n": 8, "seed": 0, "effect": 0.52},
        },
        "compose": {},
        "missing_methods": {"learned": "not available"},
    }
    paths = report.write(tmp_path, results)
    md = paths["md"].read_text()
    assert "Prompting wins on effect here" in md
    assert "include chance (0.5): baseline, mean_diff" in md
    assert "learned: not available" in md
    page = paths["html"].read_text()
    assert "data:image/png;base64," in page and "<table>" in page
    data = json.loads(paths["json"].read_text())
    assert data["derived"]["prompting"]["gain"] == pytest.approx(0.4)
    assert data["derived"]["mean_diff"]["wrong_way_fraction"] == 0.0


def test_setup_generations_are_cached_across_resumes(tiny, tmp_path, monkeypatch):
    from steerlab.evaluate import tasks

    calls = []
    real = measure.generate

    def counting_generate(lm, adaptation, prompts, **kw):
        calls.append(list(prompts))
        return real(lm, adaptation, prompts, **kw)

    monkeypatch.setattr(tasks.measure, "generate", counting_generate)
    cache = tmp_path / "gen.json"
    first = tasks.cached_generate(tiny, ["a", "b"], 3, cache)
    second = tasks.cached_generate(tiny, ["b", "a", "c"], 3, cache)
    assert calls == [["a", "b"], ["c"]]
    assert second[:2] == [first[1], first[0]]
    tasks.cached_generate(tiny, ["a"], 4, cache)  # another token budget is another key
    assert calls[-1] == ["a"]


def test_a_method_that_cannot_apply_is_skipped_not_fatal(tiny):
    from steerlab.evaluate import arena

    task = Task("s", "safety", pairs=[], lora_examples=[], instruction="", shots=[])
    result = arena.run_method(tiny, arena.MethodJob(task, "learned", arena.ArenaConfig()))
    assert "needs at least 2 prompt + positive/negative completion pairs" in result.skipped


def test_derived_ratios_need_an_established_gain_and_a_paired_speed_measure():
    """A held-out/eval ratio over a gain whose interval holds zero is noise (it printed 11x once), and a
    speed ratio is taken from the same job's back-to-back unadapted run, not from another job."""
    base = _fake_result("baseline", "none", 0.5, 0.0)
    noisy = _fake_result("probe", "steering", 0.5, 0.1)
    noisy["eval"]["per_example"] = [0.6, 0.4, 0.55, 0.45]  # mean gain 0: interval straddles zero
    noisy["heldout"]["estimate"] = {**noisy["heldout"]["estimate"], "value": 0.6}
    clear = _fake_result("prompting", "prompting", 0.7, 0.2)
    clear["heldout"]["estimate"] = {**clear["heldout"]["estimate"], "value": 0.6}
    clear["tokens_per_second"], clear["tokens_per_second_unadapted"] = 8.0, 10.0
    derived = report.derive({"main": {"baseline": base, "probe": noisy, "prompting": clear}})
    assert derived["probe"]["generalisation_ratio"] is None
    assert derived["prompting"]["generalisation_ratio"] == pytest.approx(0.1 / 0.2)
    assert derived["prompting"]["speed_ratio"] == pytest.approx(0.8)
    assert derived["probe"]["speed_ratio"] == pytest.approx(1.0)  # no paired run: against the baseline job


def test_activation_probe_refuses_a_steered_model_but_not_bookkeeping_hooks(tiny, vector):
    from steerlab.evaluate.concept import build_concept_score

    pos = ["good great fine", "lovely nice day", "great fun here", "happy good times"]
    neg = ["bad awful mess", "terrible sad day", "awful dull here", "gloomy bad times"]
    concept = build_concept_score("activation", pos[:3], neg[:3], pos[3:], neg[3:], lm=tiny)
    with counting(tiny.model):  # pass counting during an adaptation's build is not an adaptation
        inside = concept.score(tiny, ["good day"])
    assert inside.shape == (1,)
    with tiny.steer(vector, strength=0.5, layers=[1]), pytest.raises(DataError, match="steering"):
        concept.score(tiny, ["good day"])


def test_compare_resumes_only_into_its_own_folder(tiny, tmp_path):
    """A rerun reuses finished jobs; a run with another budget (or task, model, settings) into the same
    folder is refused instead of silently mixing jobs built under different conditions."""
    from steerlab.evaluate import arena, tasks

    def run(train: int, progress=None):
        budget = tasks.Budget(
            train=train, eval=2, heldout=2, calib=2, shots=1, max_new_tokens=2, scorer_train=8, scorer_test=4
        )
        task = tasks.persona_task(tiny, None, budget, scorer="activation")
        config = tiny_arena_config(budget, ["baseline", "mean_diff"])
        return arena.compare(tiny, task, tmp_path, config, progress=progress)

    first = run(4)
    assert set(first["main"]) == {"baseline", "mean_diff"}
    seen: list[str] = []
    run(4, seen.append)
    assert any("reusing mean_diff.json" in m for m in seen) and not any("queued" in m for m in seen)
    with pytest.raises(SteerlabError, match="different comparison"):
        run(6)


def test_compare_adds_methods_to_an_existing_folder_without_rerunning_finished_ones(tiny, tmp_path):
    """Same task, model and settings, another --methods: only the new method runs, the report has all."""
    import json

    from steerlab.evaluate import arena, tasks
    from steerlab.evaluate.arena import store

    budget = tasks.Budget(
        train=4, eval=2, heldout=2, calib=2, shots=1, max_new_tokens=2, scorer_train=8, scorer_test=4
    )
    task = tasks.persona_task(tiny, None, budget, scorer="activation")

    def config(methods):
        return tiny_arena_config(budget, methods)

    arena.compare(tiny, task, tmp_path, config(["baseline", "mean_diff"]))
    seen: list[str] = []
    second = arena.compare(tiny, task, tmp_path, config(["pca_diff"]), progress=seen.append)
    assert set(second["main"]) == {"baseline", "mean_diff", "pca_diff"}
    assert second["methods"] == ["baseline", "mean_diff", "pca_diff"]
    assert any("queued pca_diff" in m for m in seen)
    assert not any("queued mean_diff" in m or "queued baseline" in m for m in seen)
    # a folder fingerprinted before the method set was left out is still accepted (and upgraded)
    legacy = store.fingerprint(tiny, task, config(["pca_diff"]), legacy=True)
    (tmp_path / "runs" / store.FINGERPRINT).write_text(json.dumps({"fingerprint": legacy}))
    seen.clear()
    arena.compare(tiny, task, tmp_path, config(["pca_diff"]), progress=seen.append)
    assert not any("queued" in m for m in seen)
    saved = json.loads((tmp_path / "runs" / store.FINGERPRINT).read_text())["fingerprint"]
    assert saved == store.fingerprint(tiny, task, config(["pca_diff"]))
    # a method its build skips is reported with the build's reason, not as unfinished
    third = arena.compare(tiny, replace(task, preference_pairs=[]), tmp_path, config(["learned"]))
    assert "learned" not in third["main"]
    assert third["missing_methods"]["learned"].startswith("skipped: the learned method needs at least 2")


def test_knobs_added_later_leave_older_folders_resumable_at_their_default(tiny, monkeypatch):
    """A folder written before a knob existed still resumes while the knob keeps its default."""
    from steerlab.evaluate import tasks
    from steerlab.evaluate.arena import ArenaConfig, store

    budget = tasks.Budget(train=4, eval=2, heldout=2, calib=2, shots=1, max_new_tokens=2)
    task = tasks.persona_task(tiny, None, budget, scorer="activation")
    now = store.fingerprint(tiny, task, ArenaConfig(budget=budget))
    assert store.fingerprint(tiny, task, ArenaConfig(budget=budget, refusal_add_strength=2.0)) != now
    full = ArenaConfig.as_dict
    monkeypatch.setattr(  # the configuration as an older steerlab, without the later knobs, recorded it
        ArenaConfig,
        "as_dict",
        lambda self: {k: v for k, v in full(self).items() if not k.startswith("refusal_")},
    )
    assert store.fingerprint(tiny, task, ArenaConfig(budget=budget)) == now


def test_a_saved_job_made_from_other_inputs_is_run_again(tmp_path):
    """The conditional method's saved result is stale once a later method changes the vector it gates."""
    from steerlab.evaluate.arena import store
    from steerlab.evaluate.arena.results import MethodResult

    class Calls:
        def __init__(self):
            self.jobs = []

        def map(self, fn, items, on_result=None):
            for i, item in enumerate(items):
                self.jobs.append(item)
                on_result(i, fn(None, item))

    def run(_lm, base):
        return MethodResult("conditional", 1.0, family="steering", settings={"base": base})

    def stage(base, executor):
        current = lambda r: r.settings.get("base") == base  # noqa: E731
        jobs = [("conditional", base)]
        return store.run_stage(
            executor, run, jobs, tmp_path, lambda m: None, "main", MethodResult.from_json, current=current
        )

    first, second, third = Calls(), Calls(), Calls()
    assert stage("mean_diff", first)["conditional"].settings["base"] == "mean_diff" and first.jobs == [
        "mean_diff"
    ]
    assert stage("mean_diff", second)["conditional"].settings["base"] == "mean_diff" and second.jobs == []
    assert stage("refusal", third)["conditional"].settings["base"] == "refusal" and third.jobs == ["refusal"]
