# Stage 3: a local model directory per config entry. A fixture is built offline from its seed; a hub
# model is downloaded at its pinned revision. Inference loads either through the same from_pretrained path.


rule model:
    output:
        directory(res("models/{model}")),
    log:
        res("logs/models/{model}.log"),
    benchmark:
        res("benchmarks/models/{model}.tsv")
    priority: INFERENCE_FIRST
    conda:
        ENV
    params:
        entry=model_entry,
        episodes=config["episodes"],
    script:
        "../workflow_scripts/model.py"
