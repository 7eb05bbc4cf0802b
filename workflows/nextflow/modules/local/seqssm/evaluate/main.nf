// SEQSSM_EVALUATE: Metrics and plots of the predictions, with the fine-tuning history.
// One `seqssm evaluate` call; its options come from ext.args (conf/modules.config), already
// shell-quoted there; every other value is quoted here with q().

// A value shell-quoted for the script: in single quotes, each ' inside written '\'' (close, escaped quote,
// reopen), so staged names and values with spaces, ; or $ stay one literal word.
def q(value) { "'" + value.toString().replace("'", "'\\''") + "'" }

process SEQSSM_EVALUATE {
    tag "$meta.id"
    label 'process_low'
    conda "${moduleDir}/../environment.yml"

    input:
    tuple val(meta), path(predictions), path(model)

    output:
    tuple val(meta), path('evaluate'), emit: report
    path 'versions.yml', emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    def history = "${model}/train_log.tsv"
    """
    OMP_NUM_THREADS=${q(task.cpus)} seqssm evaluate ${q(predictions)} --out evaluate --history ${q(history)} ${args}

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        seqssm: \$(python -c 'import seqssm; print(seqssm.__version__)')
        torch: \$(python -c 'import torch; print(torch.__version__)')
    END_VERSIONS
    """

    stub:
    """
    mkdir -p evaluate
    touch evaluate/metrics.json
    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        seqssm: stub
    END_VERSIONS
    """
}
