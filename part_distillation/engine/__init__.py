"""Training / evaluation engine (detectron2 ``DefaultTrainer`` based) of the learned stages."""
