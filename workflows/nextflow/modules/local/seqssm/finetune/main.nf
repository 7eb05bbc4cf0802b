// SEQSSM_FINETUNE: Fine-tune a classifier on the sample's labelled table from its pretrained backbone.
// One `seqssm finetune` call; its options come from ext.args (conf/modules.config), already
// shell-quoted there; every other value is quoted here with q().

// A value shell-quoted for the script: in single quotes, each ' inside written '\'' (close, escaped quote,
// reopen), so staged names and values with spaces, ; or $ stay one literal word.
def q(value) { "'" + value.toString().replace("'", "'\\''") + "'" }

process SEQSSM_FINETUNE {
    tag "$meta.id"
    label 'process_gpu'
    conda "${moduleDir}/../environment.yml"

    input:
    tuple val(meta), path(model), path(labels)

    output:
    tuple val(meta), path('finetune'), emit: model
    path 'versions.yml', emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    def backbone = "${model}/checkpoint"
    """
    OMP_NUM_THREADS=${q(task.cpus)} seqssm finetune ${q(labels)} --init-from ${q(backbone)} --out finetune ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        seqssm: \$(python -c 'import seqssm; print(seqssm.__version__)')
        torch: \$(python -c 'import torch; print(torch.__version__)')
    END_VERSIONS
    """

    stub:
    """
    mkdir -p finetune/checkpoint
    touch finetune/train_log.tsv finetune/run.json finetune/test_predictions.tsv
    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        seqssm: stub
    END_VERSIONS
    """
}
