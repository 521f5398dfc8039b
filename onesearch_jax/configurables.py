"""gin registrations of the configs, in one place, so every entry point binds the same names.

Data code stays free of gin; gin files name these as ``WorldConfig.num_items = ...`` and so on.
"""

from collections.abc import Sequence
from typing import TYPE_CHECKING

import gin

from onesearch_jax.data.examples import ExamplesConfig
from onesearch_jax.data.relevance_import import RelevanceTableConfig
from onesearch_jax.data.world import WorldConfig
from onesearch_jax.decode.infer_config import InferConfig
from onesearch_jax.evaluate.ablation import AblationConfig, AblationProbe, AblationRow
from onesearch_jax.evaluate.eval_config import EvalConfig
from onesearch_jax.evaluate.segments import SegmentConfig
from onesearch_jax.models.configs import T5Config
from onesearch_jax.models.mesh_config import MeshConfig, standard_logical_axis_rules
from onesearch_jax.pipeline.demo import DemoConfig
from onesearch_jax.sid.build import SidBuildConfig
from onesearch_jax.sid.embed import TfidfSvdConfig
from onesearch_jax.sid.quantize import QuantizerConfig
from onesearch_jax.train.checkpoint_config import CheckpointConfig
from onesearch_jax.train.distill_config import DistillConfig
from onesearch_jax.train.grpo_config import GrpoConfig
from onesearch_jax.train.optimizer_config import OptimizerConfig
from onesearch_jax.train.run_config import StageConfig, TrainConfig
from onesearch_jax.train.tpma_config import AdvantageConfig
from onesearch_jax.understanding.calibrate import CalibrationConfig, UserCalibrationConfig
from onesearch_jax.understanding.categories import CategoryConfig
from onesearch_jax.understanding.job import KeywordJobConfig
from onesearch_jax.understanding.keywords import KeywordConfig
from onesearch_jax.understanding.mining import MiningConfig
from onesearch_jax.understanding.pipeline import UnderstandingConfig
from onesearch_jax.vocab_config import VocabConfig

if TYPE_CHECKING:
    from onesearch_jax.train.objective import TrainObjective

ConfiguredWorld = gin.external_configurable(WorldConfig, "WorldConfig")
ConfiguredTable = gin.external_configurable(RelevanceTableConfig, "RelevanceTableConfig")
ConfiguredExamples = gin.external_configurable(ExamplesConfig, "ExamplesConfig")
_Vocab = gin.external_configurable(VocabConfig, "VocabConfig")
# gin/models/*.gin bind the shape; the caller passes vocab_size=<the vocabulary's size> (explicit wins).
ConfiguredT5 = gin.external_configurable(T5Config, "T5Config")


def configured_vocab() -> VocabConfig:
    """VocabConfig as gin binds it (the prompt markers are added by the caller)."""
    return _Vocab()


_SidBuild = gin.external_configurable(SidBuildConfig, "SidBuildConfig")
_Quantizer = gin.external_configurable(QuantizerConfig, "QuantizerConfig")
_Tfidf = gin.external_configurable(TfidfSvdConfig, "TfidfSvdConfig")


def configured_sid_build() -> SidBuildConfig:
    """SidBuildConfig with its nested QuantizerConfig and TfidfSvdConfig bound by gin, by name."""
    return _SidBuild(quantizer=_Quantizer(), tfidf=_Tfidf())


_Understanding = gin.external_configurable(UnderstandingConfig, "UnderstandingConfig")
_Keywords = gin.external_configurable(KeywordConfig, "KeywordConfig")
_Categories = gin.external_configurable(CategoryConfig, "CategoryConfig")
_Mining = gin.external_configurable(MiningConfig, "MiningConfig")
_Calibration = gin.external_configurable(CalibrationConfig, "CalibrationConfig")
_UserCalibration = gin.external_configurable(UserCalibrationConfig, "UserCalibrationConfig")
ConfiguredKeywordJob = gin.external_configurable(KeywordJobConfig, "KeywordJobConfig")


def configured_understanding() -> UnderstandingConfig:
    """UnderstandingConfig with its nested keyword, category, mining and calibration configs bound by gin."""
    return _Understanding(
        keywords=_Keywords(),
        categories=_Categories(),
        mining=_Mining(),
        calibration=_Calibration(),
        user_calibration=_UserCalibration(),
    )


# Training: the device mesh, the logical-axis rules and the optimizer (gin/launch/*.gin, gin/runs/*.gin).
# All three are plain Python; jax is imported only by the code that builds meshes and steps from them.
ConfiguredMesh = gin.external_configurable(MeshConfig, "MeshConfig")
ConfiguredOptimizer = gin.external_configurable(OptimizerConfig, "OptimizerConfig")
configured_logical_axis_rules = gin.external_configurable(standard_logical_axis_rules, "standard_logical_axis_rules")

# Runs (gin/runs/*.gin): the curriculum, its evaluation and logging, and the checkpoints.
ConfiguredStage = gin.external_configurable(StageConfig, "StageConfig")
ConfiguredTrain = gin.external_configurable(TrainConfig, "TrainConfig")
# The caller passes directory=<model_dir>/checkpoints unless gin binds it (an explicit argument wins).
ConfiguredCheckpoint = gin.external_configurable(CheckpointConfig, "CheckpointConfig")
ConfiguredInfer = gin.external_configurable(InferConfig, "InferConfig")
ConfiguredEval = gin.external_configurable(EvalConfig, "EvalConfig")
ConfiguredSegments = gin.external_configurable(SegmentConfig, "SegmentConfig")
ConfiguredAblation = gin.external_configurable(AblationConfig, "AblationConfig")
ConfiguredAblationRow = gin.external_configurable(AblationRow, "AblationRow")
ConfiguredAblationProbe = gin.external_configurable(AblationProbe, "AblationProbe")
ConfiguredDemo = gin.external_configurable(DemoConfig, "DemoConfig")


# The train loss (gin/runs/lr_esd.gin, gin/runs/grpo.gin): SFT's cross-entropy unless
# ``train_loss.distill = @DistillConfig()`` (LR-ESD) or ``train_loss.grpo = @GrpoConfig()`` (TPMA-GRPO).
ConfiguredDistill = gin.external_configurable(DistillConfig, "DistillConfig")
ConfiguredGrpo = gin.external_configurable(GrpoConfig, "GrpoConfig")
ConfiguredAdvantage = gin.external_configurable(AdvantageConfig, "AdvantageConfig")


@gin.configurable("train_loss", denylist=["stages"])
def configured_train_loss(
    stages: Sequence[StageConfig], distill: DistillConfig | None = None, grpo: GrpoConfig | None = None
) -> "TrainObjective":
    """The train objective of a run of ``stages``: cross-entropy (SFT); with a ``distill`` config
    LR-ESD on the stages whose feature converter is ``encdec_teacher`` and cross-entropy on the
    others, with the EMA teacher that ``mode="ema"`` needs; with a ``grpo`` config TPMA-GRPO (its
    stages use the ``grpo`` feature converter) (``onesearch_jax.train.objective``)."""
    from onesearch_jax.train.objective import make_train_objective  # jax: only training jobs load it

    return make_train_objective(distill, stages, grpo)
