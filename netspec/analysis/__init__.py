"""Analysis layer: the passes over the IR (shapes, parameters, MACs) and the summary that check prints."""
