// SEQSSM_PREDICT: Predict the labelled table with the fine-tuned classifier.
// One `seqssm predict` call; its options come from ext.args (conf/modules.config), already
// shell-quoted there; every other value is quoted here with q().

// A value shell-quoted for the script: in single quotes, each ' inside written '\'' (close, escaped quote,
// reopen), so staged names and values with spaces, ; or $ stay one literal word.
def q(value) { "'" + value.toString().replace("'", "'\\''") + "'" }

process SEQSSM_PREDICT {
    tag "$meta.id"
    label 'process_gpu'
    conda "${moduleDir}/../environment.yml"

    input:
    tuple val(meta), path(model), path(labels)

    output:
    tuple val(meta), path('predict/predictions.tsv'), emit: predictions
    path 'versions.yml', emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    def checkpoint = "${model}/checkpoint"
    """
    mkdir -p predict
    OMP_NUM_THREADS=${q(task.cpus)} seqssm predict ${q(checkpoint)} ${q(labels)} --out predict/predictions.tsv ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        seqssm: \$(python -c 'import seqssm; print(seqssm.__version__)')
        torch: \$(python -c 'import torch; print(torch.__version__)')
    END_VERSIONS
    """

    stub:
    """
    mkdir -p predict
    touch predict/predictions.tsv
    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        seqssm: stub
    END_VERSIONS
    """
}
