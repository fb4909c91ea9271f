"""`endostream train`: the multi-task training loop, on a time budget, checkpointed and resumable.

The learning rate follows a cosine over the fraction of the time budget spent (not over a step
count), so a run slowed by other work on the machine still anneals properly; elapsed training
time is saved in the checkpoint and resume continues the same schedule.
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from endostream.fileutil import atomic_write_json, file_sha256
from endostream.model.io import load_weights, save_weights
from endostream.model.network import NetConfig, PolypNet
from endostream.model.scheduler import MaskScheduler
from endostream.training.clips import ClipBatch, ClipSampler
from endostream.training.coarse_errors import degrade_coarse
from endostream.training.dataset import Splits, load_splits
from endostream.training.grow import grow_from
from endostream.training.hard_examples import HardnessTable, sample_hardness
from endostream.training.losses import (MASK_LOSSES, FrameDiscriminator, box_l1, discriminator_loss,
                                        generator_adv_loss)
from endostream.training.step_clock import StepClock
from endostream.training.validate import false_alarms, load_eval_items, validate

DEFAULT_WEIGHTS = {"aux": 0.5, "presence": 0.3, "box": 1.0, "predict": 0.5, "adv": 0.01}


# Consecutive steps with non-finite gradients after which training stops with an error (each is skipped).
MAX_SKIPPED_STEPS = 10


def train_step(model: PolypNet, disc: FrameDiscriminator | None, opt: torch.optim.Optimizer,
               opt_d: torch.optim.Optimizer | None, batch: ClipBatch, sched: MaskScheduler, *,
               weights: dict[str, float] | None = None, prev_mask_p: float = 0.3, heads: bool = True,
               diffusion: bool = True, bf16: bool = True, gen: torch.Generator | None = None,
               timesteps: str = "uniform", second_step_p: float = 0.4,
               denoiser_only: bool = False, zero_noise: bool = False,
               mask_loss: str = "dice_bce", hardness: HardnessTable | None = None,
               coarse_error_p: float = 0.0) -> dict[str, float]:
    """One optimisation step on a clip batch; returns the loss terms as floats.

    ``diffusion=False`` trains no denoiser (no noisy-mask pass, no ``mask`` loss): only the plain
    decoder pass, as in the issue's discriminative baseline recipe. ``timesteps="sampler"`` trains
    the denoiser only where the K<=2 sampler runs it (``_sampler_noisy_mask``); "uniform" noises the
    ground truth at any timestep (the first four generations). ``mask_loss`` names the loss of both
    mask outputs (``MASK_LOSSES``). ``hardness`` receives each sample's K=0 error (hard-example mining).
    ``coarse_error_p``: share of samples whose K=0 mask, as the step's refinement input, carries one
    error (training/coarse_errors.py)."""
    w = {**DEFAULT_WEIGHTS, **(weights or {})}
    seg_loss = MASK_LOSSES[mask_loss]
    dev = next(model.parameters()).device  # the batch follows the model (cpu, or cuda on a GPU machine)
    model.train()
    if denoiser_only:  # the K=0 pass stays exactly as it is: no gradient, no batch-norm statistics
        for part in (model.encoder, model.neck, model.aux_head, model.heads):
            part.eval()
    imgs = torch.from_numpy(batch.images).to(dev)
    masks = torch.from_numpy(batch.masks).to(dev)
    valid_past = torch.from_numpy(batch.valid).to(dev)
    b, t1, _, s, _ = imgs.shape
    past, slots = t1 - 1, model.cfg.memory_frames
    cur = imgs[:, -1].contiguous(memory_format=torch.channels_last)
    target = masks[:, -1]
    amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16)

    # Past frames only fill the memory: encoded without gradients (stages 1-3 only), as at run time.
    memory = torch.zeros(b, slots, model.cfg.neck_channels, s // 16, s // 16, device=dev)
    valid = torch.zeros(b, slots, device=dev)
    if past and slots and model.cfg.temporal:
        with torch.no_grad(), amp:
            pf = imgs[:, :past].reshape(b * past, 3, s, s).contiguous(memory_format=torch.channels_last)
            feats = model.memory_feature(pf).float().reshape(b, past, -1, s // 16, s // 16)
        k = min(past, slots)
        memory[:, slots - k:] = feats[:, past - k:]
        valid[:, slots - k:] = valid_past[:, past - k:]

    errors = ((lambda z: degrade_coarse(z, coarse_error_p, gen if gen is not None else torch.default_generator))
              if coarse_error_p > 0 and model.cfg.refine_inputs else None)
    with amp:
        out = model.encode_frame(cur, memory, valid, coarse_errors=errors)
    if diffusion and timesteps == "sampler":
        with amp:  # the sampler's no-grad first step runs the denoiser on the same (bf16) features
            x_t, t = _sampler_noisy_mask(model, out["feat"], sched, second_step_p, gen, zero_noise=zero_noise)
            out["logits"] = model.denoise(out["feat"], x_t, t.float())
    elif diffusion:
        x_t, t = _noisy_mask(masks, valid, sched, prev_mask_p, gen)
        with amp:
            out["logits"] = model.denoise(out["feat"], x_t, t.float())
    up = lambda z: F.interpolate(z.float(), size=(s, s), mode="bilinear", align_corners=False)  # noqa: E731
    aux_full = up(out["aux_logits"])
    losses = {"aux": seg_loss(aux_full, target)}
    if hardness is not None and batch.indices is not None:
        hardness.update(batch.indices, sample_hardness(aux_full, target))
    if diffusion:
        losses["mask"] = seg_loss(up(out["logits"]), target)
    presence = torch.from_numpy(batch.presence).to(dev)
    if heads:
        losses["presence"] = F.binary_cross_entropy_with_logits(out["presence_logit"].float(), presence)
        losses["box"] = box_l1(out["box"], torch.from_numpy(batch.box).to(dev), presence)

    has_past = valid.amax(1) > 0
    fake = real = None
    if model.frame_predictor is not None and bool(has_past.any()):
        with amp:
            fake = model.frame_predictor(model.neck.temporal.values(memory[has_past]), valid[has_past]).float()
        real = F.avg_pool2d(cur[has_past].float(), 4)
        losses["predict"] = (fake - real).abs().mean()
        if disc is not None:
            losses["adv"] = generator_adv_loss(disc, fake)

    total = sum(w.get(k, 1.0) * v for k, v in losses.items())
    opt.zero_grad(set_to_none=True)
    total.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    # A non-finite gradient would turn every weight into NaN at once (seen with bf16 autocast on an
    # AMD CPU with avx512_bf16): such a step is skipped and counted, never applied.
    finite = bool(torch.isfinite(norm))
    if finite:
        opt.step()
    result = {k: float(v.detach()) for k, v in losses.items()}
    result["total"] = float(total.detach())
    result["skipped"] = 0.0 if finite else 1.0
    if disc is not None and opt_d is not None and fake is not None:
        loss_d = discriminator_loss(disc, real, fake)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        result["disc"] = float(loss_d.detach())
    return result


def _noisy_mask(masks: torch.Tensor, valid: torch.Tensor, sched: MaskScheduler, prev_mask_p: float,
                gen: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The denoiser's input: the current mask at stride 4 noised to a random timestep; for a share
    ``prev_mask_p`` of samples with a past frame, the PREVIOUS frame's mask instead, which is what
    a warm start feeds the denoiser in a stream. Returns (x_t, t)."""
    b, dev = masks.shape[0], masks.device
    small = F.avg_pool2d(masks[:, -1], 4)
    if masks.shape[1] > 1:
        prev_small = F.avg_pool2d(masks[:, -2], 4)
        use_prev = (torch.rand(b, 1, 1, 1, generator=gen).to(dev) < prev_mask_p) & (valid[:, -1].view(b, 1, 1, 1) > 0)
        small = torch.where(use_prev, prev_small, small)
    x0 = sched.mask_to_signal(small)
    t = torch.randint(0, sched.num_train_steps, (b,), generator=gen).to(dev)
    return sched.add_noise(x0, torch.randn(x0.shape, generator=gen).to(dev), t), t


def _sampler_noisy_mask(model: PolypNet, cond: torch.Tensor, sched: MaskScheduler, second_step_p: float,
                        gen: torch.Generator | None, zero_noise: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The inputs the K=1 and K=2 samplers really give the denoiser (DDP's self-aligned training):
    pure noise at the first timestep (999) and, for a share ``second_step_p`` of samples, the
    second timestep's sample built by the same DDIM update from the model's OWN first estimate
    (no gradient through it), not from noised ground truth. ``zero_noise``: the honest control, a
    deterministic head of the same size trained the same way (its starting sample is all zeros).
    Returns (x_t, t)."""
    b, _, h, w = cond.shape
    steps = MaskScheduler(sched.num_train_steps, sched.scale)
    first, second = steps.set_timesteps(2)
    # Drawn on the CPU generator (the same stream on any device), then moved to the features' device.
    noise = torch.randn((b, 1, h, w), generator=gen).to(cond.device)
    if zero_noise:
        noise = torch.zeros_like(noise)  # drawn anyway, so both arms of the control see the same stream
    t = torch.full((b,), first, dtype=torch.long, device=cond.device)
    use_second = torch.rand(b, generator=gen).to(cond.device) < second_step_p
    if bool(use_second.any()):
        with torch.no_grad():
            x0_logits = model.denoise(cond.detach(), noise, t.float()).float()
        x_second, _ = steps.step(x0_logits, first, noise)
        noise = torch.where(use_second.view(b, 1, 1, 1), x_second, noise)
        t = torch.where(use_second, torch.full_like(t, second), t)
    return noise, t


def init_from_weights(model: PolypNet, path: str | Path) -> dict:
    """Load an earlier run's weights into ``model`` strictly; returns their metadata.

    Every layer is size-agnostic (convolutions, pooling, resizes), so the input size may differ:
    that is how a network trained at 256 is fine-tuned at 320. Refinement inputs may be added, the
    encoder grown deeper (``grow_from``) or the denoiser resized (it starts afresh), one at a time."""
    init, meta = load_weights(path)
    free = {"input_size": 0, "refine_inputs": False, "encoder": "", "denoiser_hidden": 0, "denoiser_dilations": ()}
    if {**init.cfg.to_dict(), **free} != {**model.cfg.to_dict(), **free}:
        raise ValueError(f"init_weights {path}: its network config differs from model.* (only model.input_size, "
                         "model.refine_inputs, the denoiser's size and a deeper model.encoder may change)")
    resized = (init.cfg.denoiser_hidden, tuple(init.cfg.denoiser_dilations)) != (
        model.cfg.denoiser_hidden, tuple(model.cfg.denoiser_dilations))
    if resized:  # a denoiser of another size starts afresh on the trained network (K=0 is unchanged)
        if init.cfg.encoder != model.cfg.encoder or init.cfg.refine_inputs != model.cfg.refine_inputs:
            raise ValueError(f"init_weights {path}: resize the denoiser alone, not with other changes")
        state = {k: v for k, v in init.state_dict().items() if not k.startswith("denoiser.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        stray = [k for k in missing if not k.startswith("denoiser.")] + list(unexpected)
        if stray:
            raise ValueError(f"init_weights {path}: keys do not match the network: {stray[:5]}")
        print(f"denoiser resized (hidden {init.cfg.denoiser_hidden} -> {model.cfg.denoiser_hidden}, dilations "
              f"{tuple(init.cfg.denoiser_dilations)} -> {tuple(model.cfg.denoiser_dilations)}): it starts afresh")
        return meta
    if init.cfg.encoder != model.cfg.encoder:  # e.g. Lite0 -> Lite1, starting from the same function
        if init.cfg.refine_inputs != model.cfg.refine_inputs:
            raise ValueError(f"init_weights {path}: grow the encoder or add refinement inputs, not both at once")
        new = grow_from(model, init)
        print(f"grew {init.cfg.encoder} into {model.cfg.encoder}: {len(new)} new blocks {new}, each starting as the identity")
        return meta
    missing, unexpected = model.load_state_dict(init.state_dict(), strict=False)
    # Adding refinement inputs adds one zero-initialised convolution; nothing else may be missing.
    stray = [k for k in missing if not k.startswith("denoiser.refine.")] + list(unexpected)
    if stray:
        raise ValueError(f"init_weights {path}: keys do not match the network: {stray[:5]}")
    return meta


def training_splits(cfg, val_only: bool = False) -> Splits:
    """The training/validation split of a ``train`` config.

    The split has its own seed (``data.split_seed``): a different training seed must not move
    images between training and the validation split that ``endostream eval`` and the model
    card score.
    """
    return load_splits(cfg.data.root, int(cfg.data.cache_size), seed=int(cfg.data.get("split_seed", 0)),
                       val_only=val_only, holdout=cfg.data.get("holdout"))


def without_holdout(v: dict[str, float], holdout: str | None) -> dict[str, float]:
    """Validation scores with the held-out source's Dice moved to ``cross_dice`` and left out of
    ``mean_dice``, so checkpoint selection never sees the source the cross-source figure is on."""
    if holdout is None:
        return v
    out = {k: x for k, x in v.items() if k != f"{holdout}_dice"}
    out["cross_dice"] = v[f"{holdout}_dice"]
    kept = [x for k, x in out.items() if k.endswith("_dice") and k not in ("mean_dice", "cross_dice")]
    out["mean_dice"] = float(np.mean(kept))
    return out


def _lr_at(progress: float, step: int, base: float, warmup: int) -> float:
    warm = min(1.0, (step + 1) / max(1, warmup))
    return base * warm * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def training_device(name: str) -> torch.device:
    """``train.device`` -> a torch device, or a one-line error where it is not here."""
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"train.device={name!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device={name}: this torch ({torch.__version__}) sees no CUDA GPU")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"train.device={name}: cpu or cuda[:i]")
    return device


def run(cfg) -> int:
    tc = cfg.train
    torch.set_num_threads(int(tc.threads))
    torch.manual_seed(int(tc.seed))
    out = Path(tc.out)
    out.mkdir(parents=True, exist_ok=True)
    net_cfg = NetConfig.from_dict(dict(cfg.model))
    device = training_device(str(tc.device))
    # On the device before the optimizer, the moving average and any loading, so all of them live there.
    model = PolypNet(net_cfg).to(device, memory_format=torch.channels_last)
    disc = FrameDiscriminator().to(device) if (net_cfg.temporal and tc.adversarial) else None
    # A pretrained encoder learns at a fraction of the rest's rate (it starts from useful features;
    # the neck, heads and denoiser start from random ones).
    coarse_error_p = float(tc.coarse_error_p)
    if not 0.0 <= coarse_error_p <= 1.0 or (coarse_error_p > 0 and not net_cfg.refine_inputs):
        raise ValueError(f"train.coarse_error_p={coarse_error_p}: needs a share within [0, 1] and "
                         "model.refine_inputs=true (the step's coarse-mask input it changes)")
    denoiser_only = str(tc.get("trainable", "all")) == "denoiser"
    if denoiser_only:  # fine-tune the diffusion step alone; K=0's output cannot move
        for name, q in model.named_parameters():
            q.requires_grad_(name.startswith("denoiser."))
    enc_scale = float(tc.get("encoder_lr_scale", 1.0))
    enc_params = list(model.encoder.parameters())
    enc_ids = {id(q) for q in enc_params}
    opt = torch.optim.AdamW([{"params": enc_params, "scale": enc_scale},
                             {"params": [q for q in model.parameters() if id(q) not in enc_ids], "scale": 1.0}],
                            lr=float(tc.lr), weight_decay=float(tc.weight_decay))
    opt_d = torch.optim.AdamW(disc.parameters(), lr=float(tc.lr) * 0.5, betas=(0.5, 0.999)) if disc else None
    sched = MaskScheduler(net_cfg.num_train_steps, net_cfg.mask_scale)
    step, elapsed, best = 0, 0.0, -1.0
    # The moving average is what is validated, kept as best and exported: on a few hundred steps of
    # fine-tuning it smooths the step-to-step noise that checkpoint selection would otherwise pick from.
    ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(float(tc.ema_decay)), use_buffers=True)
           if tc.get("ema_decay") else None)
    last = out / "last.pt"
    resumed = None
    if last.is_file() and tc.resume:
        ck = resumed = torch.load(last, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"], strict=True)
        opt.load_state_dict(ck["opt"])
        if disc is not None and ck.get("disc"):
            disc.load_state_dict(ck["disc"])
            opt_d.load_state_dict(ck["opt_d"])
        if ema is not None:
            if ck.get("ema") is None:
                raise ValueError(f"{last} was trained without train.ema_decay; resume it without, or start afresh")
            ema.load_state_dict(ck["ema"])
        step, elapsed, best = ck["step"], ck["elapsed"], ck["best"]
        print(f"resumed from {last}: step {step}, {elapsed / 60:.1f} min done, best val Dice {best:.4f}")
    elif tc.get("init_weights"):
        # Continue an earlier run's network (e.g. the shipped weights) with a fresh schedule.
        meta = init_from_weights(model, tc.init_weights)
        print(f"initialised from {tc.init_weights} ({meta.get('minutes', 0):.0f} min of earlier training)")
    elif tc.get("pretrained_encoder") and net_cfg.encoder != "cnn":
        from endostream.model.efficientnet_lite import imagenet_weights_path

        src = imagenet_weights_path(net_cfg.encoder.removeprefix("efficientnet_"))
        model.encoder.load_imagenet(torch.load(src, map_location="cpu", weights_only=True))
        print(f"encoder initialised from ImageNet weights {src.name}")

    t0 = time.time()
    splits = training_splits(cfg)
    # Hard-example mining: one table shared by every sampler, carried in last.pt for resume.
    hardness = HardnessTable(len(splits.train), float(tc.hard_mining)) if float(tc.hard_mining) > 0 else None
    if hardness is not None and resumed is not None:
        if resumed.get("hardness") is None:
            raise ValueError(f"{last} was trained without train.hard_mining; resume it without, or start afresh")
        hardness.load_state_dict(resumed["hardness"])
    val_items = load_eval_items(splits.val)
    holdout = cfg.data.get("holdout")
    alarm_val = [s for s in splits.val if s.source != holdout]  # polyps from the sources trained on
    print(f"data: {len(splits.train)} train, {len(splits.val)} val, {len(splits.negatives)} negatives "
          f"({time.time() - t0:.0f} s)")
    # Single-frame batches cost about half a clip batch (measured: 0.7 vs 1.2 s per 16, and 8x less
    # augmentation); the temporal module only learns from the clip batches, a share clip_p of them.
    # Multi-scale training (train.sizes): each batch is drawn at one of the sizes, so the fully
    # convolutional network serves any of them; validation and export use model.input_size.
    sizes = [int(s) for s in (tc.get("sizes") or [net_cfg.input_size])]
    # One set of samplers per loader thread (a sampler is not thread-safe); thread 0's seeds are the
    # single-threaded loader's, so train.loader_threads=1 draws the same batches as before.
    loaders = int(tc.loader_threads)
    samplers = [{(size, past): ClipSampler(splits.train, splits.negatives, size=size, past=past,
                                           negative_p=float(tc.negative_p),
                                           seed=int(tc.seed) + step + past + size + 100_003 * w,
                                           look_p=float(tc.get("look_p", 0.0)), hardness=hardness,
                                           corrupt_p=float(tc.corrupt_current_p))
                 for size in sizes for past in (0, int(tc.past_frames))} for w in range(loaders)]
    clip_p = float(tc.get("clip_p", 1.0))
    pick = np.random.default_rng(int(tc.seed) + step)

    def next_batch(worker: int) -> ClipBatch:
        size = sizes[int(pick.integers(len(sizes)))]  # drawn in order of submission, on the main thread
        past = int(tc.past_frames) if pick.random() < clip_p else 0
        return prefetch.submit(samplers[worker][(size, past)].batch, int(tc.batch_size))

    # Checkpoint selection's second criterion: false alarms no worse than max_false_alarms or, when
    # continuing earlier weights, than those weights' own count on the same stream.
    alarm_limit = float(tc.max_false_alarms)
    if int(tc.alarm_stretches) > 0:
        if resumed is not None:
            alarm_limit = float(resumed.get("alarm_limit", alarm_limit))
        elif tc.get("init_weights"):
            a0 = false_alarms(model, alarm_val, stretches=int(tc.alarm_stretches),
                              negative_frames=int(tc.alarm_negative_frames), threads=int(tc.threads))
            alarm_limit = max(alarm_limit, a0["false_alarms_per_min"])
            print(f"initial weights: {a0}; checkpoints kept at <= {alarm_limit:.2f} false alarms/min")
    gen = torch.Generator().manual_seed(int(tc.seed) + step)
    budget = float(tc.budget_minutes) * 60
    # A step budget (ablations) makes the schedule and the validation points independent of how
    # busy the machine is; the default time budget makes a session's length predictable.
    budget_steps = int(tc.get("budget_steps") or 0)
    val_every_steps = int(tc.get("val_every_steps") or 0)

    def progress() -> float:
        return step / budget_steps if budget_steps > 0 else elapsed / budget
    log_path = out / "log.csv"
    new_log = not log_path.is_file()
    log = open(log_path, "a", newline="")
    writer = csv.writer(log)
    if new_log:
        writer.writerow(["step", "minutes", "lr", "total", "mask", "aux", "presence", "box", "predict", "adv", "disc",
                         "imgs_per_s", "val_kvasir", "val_clinicdb", "val_mean"])
    last_val = last_ck = elapsed
    clock = StepClock()
    skipped_in_row = 0
    # Augmentation (OpenCV, releases the GIL) for the next batch overlaps this step's compute.
    # Several threads feed a GPU; batch i comes from sampler set i % loaders, and a set's next batch is
    # only asked for once its last one was taken, so no set is ever used by two threads at once.
    prefetch = ThreadPoolExecutor(max_workers=loaders)
    pending = deque((w, next_batch(w)) for w in range(loaders))
    bar = (tqdm(total=budget_steps, initial=step, unit="step", desc="train", mininterval=5) if budget_steps > 0
           else tqdm(total=int(budget), initial=int(elapsed), unit="s", desc="train", mininterval=5))
    while progress() < 1.0:
        ts = time.time()
        lr = _lr_at(progress(), step, float(tc.lr), int(tc.warmup_steps))
        for g in opt.param_groups:
            g["lr"] = lr * g.get("scale", 1.0)
        worker, job = pending.popleft()
        batch = job.result()
        pending.append((worker, next_batch(worker)))
        losses = train_step(model, disc, opt, opt_d, batch, sched, weights=dict(tc.loss_weights),
                            prev_mask_p=float(tc.prev_mask_p), heads=bool(tc.heads),
                            diffusion=bool(tc.diffusion), bf16=bool(tc.bf16), gen=gen,
                            timesteps=str(tc.get("timesteps", "uniform")),
                            second_step_p=float(tc.get("second_step_p", 0.4)), denoiser_only=denoiser_only,
                            zero_noise=str(tc.denoiser_input) == "zeros", mask_loss=str(tc.mask_loss),
                            hardness=hardness, coarse_error_p=coarse_error_p)
        skipped_in_row = skipped_in_row + 1 if losses["skipped"] else 0
        if skipped_in_row >= MAX_SKIPPED_STEPS:
            raise RuntimeError(f"train: {skipped_in_row} steps in a row with non-finite gradients at step {step}; "
                               f"nothing was applied (last.pt holds the last good state)"
                               + ("; train.bf16=true: try train.bf16=false on this CPU" if tc.bf16 else ""))
        if ema is not None:
            ema.update_parameters(model)
        dt = clock.count(time.time() - ts)  # a step stopped from outside counts as a slow step, not the stop
        elapsed += dt
        step += 1
        bar.update((step if budget_steps > 0 else int(elapsed)) - bar.n)
        done = progress() >= 1.0
        row_val = ["", "", ""]
        due = (step % val_every_steps == 0 if val_every_steps > 0
               else elapsed - last_val >= float(tc.val_every_minutes) * 60)
        if due or done:
            last_val = elapsed
            kept = ema.module if ema is not None else model
            v = without_holdout(validate(kept, val_items, steps=int(tc.val_steps), warm_start=False,
                                         threads=int(tc.threads)), holdout)
            if int(tc.val_steps) != 0:  # the K=0 figure of the same weights, the ship rule's baseline
                v0 = without_holdout(validate(kept, val_items, steps=0, threads=int(tc.threads)), holdout)
                v["k0_mean_dice"] = v0["mean_dice"]
                if holdout is not None:
                    v["k0_cross_dice"] = v0["cross_dice"]
            if int(tc.alarm_stretches) > 0:
                v.update(false_alarms(kept, alarm_val, stretches=int(tc.alarm_stretches),
                                      negative_frames=int(tc.alarm_negative_frames), threads=int(tc.threads)))
            row_val = [f"{v.get('kvasir_dice', 0):.4f}", f"{v.get('clinicdb_dice', 0):.4f}", f"{v['mean_dice']:.4f}"]
            bar.write(f"step {step} {elapsed / 60:.1f} min: val {v}")
            alarms_ok = v.get("false_alarms_per_min", 0.0) <= alarm_limit
            if v["mean_dice"] > best and alarms_ok:
                best = v["mean_dice"]
                save_weights(kept, out / "best.pt", meta={"trained": True, "step": step, "minutes": elapsed / 60,
                                                          "val": v, "recipe": "endostream train",
                                                          "ema_decay": tc.get("ema_decay")})
        bar.set_postfix(loss=f"{losses['total']:.3f}", lr=f"{lr:.1e}")
        writer.writerow([step, f"{elapsed / 60:.2f}", f"{lr:.2e}"] + [
            f"{losses[k]:.4f}" if k in losses else "" for k in
            ("total", "mask", "aux", "presence", "box", "predict", "adv", "disc")] + [
            f"{len(batch.images) / dt:.1f}"] + row_val)
        log.flush()
        if elapsed - last_ck >= float(tc.ckpt_every_minutes) * 60 or done:
            last_ck = elapsed
            tmp = out / "last.pt.tmp"
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                        "disc": disc.state_dict() if disc else None, "opt_d": opt_d.state_dict() if opt_d else None,
                        "ema": ema.state_dict() if ema is not None else None,
                        "hardness": hardness.state_dict() if hardness is not None else None,
                        "step": step, "elapsed": elapsed, "best": best, "alarm_limit": alarm_limit,
                        "config": net_cfg.to_dict()}, tmp)
            os.replace(tmp, last)
    bar.close()
    prefetch.shutdown(wait=True)
    log.close()
    if (out / "best.pt").is_file():
        atomic_write_json(out / "best.json", {"sha256": file_sha256(out / "best.pt"), "best_val_mean_dice": best})
    print(f"done: {step} steps, {elapsed / 60:.1f} min, best val mean Dice {best:.4f}; weights {out / 'best.pt'}")
    return 0
