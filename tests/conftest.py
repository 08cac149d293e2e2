"""Shared pytest setup: tests run on a shared machine with few cores, so keep torch to one thread."""
import torch

torch.set_num_threads(1)
