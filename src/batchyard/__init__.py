"""batchyard: a self-hosted service speaking the Azure Batch data-plane REST API."""

__version__ = "0.1.0"
