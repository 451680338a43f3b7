"""Dataset export: the dataset folder, its card, the sidecar and the Hugging Face Hub push."""
