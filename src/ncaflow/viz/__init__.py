"""Pictures of NCAs: animations, uncertainty heatmaps and the workflow's figures."""
