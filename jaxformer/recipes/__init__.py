"""Config builders for the shipped recipes (`recipes.configs`). The tasks they train live in
`jaxformer.tasks`; `recipes.electra`, `recipes.finetune` and `recipes.continued` are their old
names, kept for existing configs and imports."""
