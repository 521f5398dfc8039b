"""gin registrations of the configs, in one place, so every entry point binds the same names.

Data code stays free of gin; gin files name these as ``WorldConfig.num_items = ...`` and so on.
"""

import gin

from onesearch_jax.data.relevance_import import RelevanceTableConfig
from onesearch_jax.data.world import WorldConfig

ConfiguredWorld = gin.external_configurable(WorldConfig, "WorldConfig")
ConfiguredTable = gin.external_configurable(RelevanceTableConfig, "RelevanceTableConfig")
