#!/usr/bin/env nextflow
// seqssm as a Nextflow pipeline: pretrain -> embed -> generate, per genome.
// nextflow run workflows/main.nf --genomes 'data/*.fa.gz' --outdir runs/nextflow
// Each process is one `seqssm` command; every option is the CLI's (see `seqssm COMMAND --help`).

nextflow.enable.dsl = 2

params.genomes = null
params.outdir = 'runs/nextflow'
params.steps = 1000
params.window = 1024
params.device = 'auto'

// A value shell-quoted for a script block: in single quotes, each ' inside written '\'' (close, escaped
// quote, reopen), so staged file names and params with spaces, ; or $ stay one literal word.
def q(value) { "'" + value.toString().replace("'", "'\\''") + "'" }

process PRETRAIN {
    tag "${genome.simpleName}"
    publishDir "${params.outdir}/${genome.simpleName}", mode: 'copy'
    input:
    path genome
    output:
    tuple path(genome), path('pretrain/checkpoint')
    script:
    """
    seqssm pretrain ${q(genome)} --out pretrain --steps ${q(params.steps)} --window ${q(params.window)} --device ${q(params.device)}
    """
}

process EMBED {
    tag "${genome.simpleName}"
    publishDir "${params.outdir}/${genome.simpleName}", mode: 'copy'
    input:
    tuple path(genome), path(checkpoint)
    output:
    path 'embeddings'
    script:
    """
    seqssm embed ${q(checkpoint)} ${q(genome)} --out embeddings --window ${q(params.window)} --device ${q(params.device)}
    """
}

process GENERATE {
    tag "${genome.simpleName}"
    publishDir "${params.outdir}/${genome.simpleName}", mode: 'copy'
    input:
    tuple path(genome), path(checkpoint)
    output:
    path 'generated.fa'
    script:
    """
    seqssm generate ${q(checkpoint)} --out generated.fa --length 1000 --device ${q(params.device)}
    """
}

workflow {
    if (!params.genomes) {
        error "give --genomes 'path/*.fa.gz'"
    }
    trained = PRETRAIN(Channel.fromPath(params.genomes, checkIfExists: true))
    EMBED(trained)
    GENERATE(trained)
}
