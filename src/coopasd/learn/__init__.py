"""Local learning: fine-tuning an encoder, pre-training the shipped backbone, what one factory does in any mode."""
