"""GLIA-HF: GLIANet (Global-Local Interaction Adapter) for blind image quality assessment, on Hugging Face transformers.

Importing the package registers the model with the Auto classes (`AutoConfig`, `AutoModel`, `AutoImageProcessor`)
and marks it for remote code, so that `save_pretrained` writes a directory that loads with `trust_remote_code=True`
in a Python that does not have this package.
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModel

from .configuration_glia import GLIAConfig
from .fragment_sampling import sample_fragments
from .image_processing_glia import GLIAImageProcessor
from .modeling_glia import GLIAForImageQualityAssessment, GLIAModel, GLIAPreTrainedModel, quality_loss
from .pipeline_glia import ImageQualityAssessmentPipeline, register_pipeline


__version__ = "0.1.0"

AutoConfig.register(GLIAConfig.model_type, GLIAConfig, exist_ok=True)
AutoModel.register(GLIAConfig, GLIAForImageQualityAssessment, exist_ok=True)
AutoImageProcessor.register(GLIAConfig, slow_image_processor_class=GLIAImageProcessor, exist_ok=True)
GLIAConfig.register_for_auto_class()
GLIAForImageQualityAssessment.register_for_auto_class("AutoModel")
GLIAImageProcessor.register_for_auto_class("AutoImageProcessor")
# pipeline("image-quality-assessment", ...); every saved checkpoint carries the pipeline code and config entry.
register_pipeline()

__all__ = [
    "GLIAConfig",
    "GLIAForImageQualityAssessment",
    "GLIAImageProcessor",
    "GLIAModel",
    "GLIAPreTrainedModel",
    "ImageQualityAssessmentPipeline",
    "quality_loss",
    "sample_fragments",
]
