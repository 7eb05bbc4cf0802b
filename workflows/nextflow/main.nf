#!/usr/bin/env nextflow
// seqssm as a Nextflow (DSL2, nf-core layout) pipeline. Per sample of the sheet (--input, tab-separated:
// sample, genome, labels, vcf; empty or '-' means none): pretrain a language model on the genome, then embed,
// score and sample from it; score the sample's VCF; fine-tune, predict and evaluate a classifier on its
// labelled table. Each process is one `seqssm` command (modules/local/seqssm/*); its options are ext.args
// in conf/modules.config, from the params of nextflow.config (see `seqssm COMMAND --help`).
//
//   nextflow run workflows/nextflow --input samples.tsv --outdir results -profile standard
//   nextflow run workflows/nextflow --input samples.tsv -profile slurm,gpu,apptainer

nextflow.enable.dsl = 2

include { SEQSSM_PRETRAIN       } from './modules/local/seqssm/pretrain/main'
include { SEQSSM_EMBED          } from './modules/local/seqssm/embed/main'
include { SEQSSM_SCORE          } from './modules/local/seqssm/score/main'
include { SEQSSM_GENERATE       } from './modules/local/seqssm/generate/main'
include { SEQSSM_SCORE_VARIANTS } from './modules/local/seqssm/score_variants/main'
include { SEQSSM_FINETUNE       } from './modules/local/seqssm/finetune/main'
include { SEQSSM_PREDICT        } from './modules/local/seqssm/predict/main'
include { SEQSSM_EVALUATE       } from './modules/local/seqssm/evaluate/main'

// A column of the sheet as a file that must exist, or null where it is empty or '-'.
def column_file(row, column) {
    def value = (row[column] ?: '').trim()
    return (value && value != '-') ? file(value, checkIfExists: true) : null
}

workflow SEQSSM {
    take:
    samples // channel: [ val(meta), path(genome), path(labels) or null, path(vcf) or null ]

    main:
    def targets = params.targets.tokenize(', ')
    SEQSSM_PRETRAIN(samples.map { meta, genome, labels, vcf -> [meta, genome] })
    def models = SEQSSM_PRETRAIN.out.model
    def genomes = samples.map { meta, genome, labels, vcf -> [meta, genome] }
    def with_genome = models.join(genomes)

    if ('embed' in targets) { SEQSSM_EMBED(with_genome) }
    if ('score' in targets) { SEQSSM_SCORE(with_genome) }
    if ('generate' in targets) { SEQSSM_GENERATE(models) }
    if ('score_variants' in targets) {
        def vcfs = samples.filter { it[3] != null }.map { meta, genome, labels, vcf -> [meta, genome, vcf] }
        SEQSSM_SCORE_VARIANTS(models.join(vcfs).map { meta, model, genome, vcf -> [meta, model, genome, vcf] })
    }
    def wants_classifier = targets.any { it in ['finetune', 'predict', 'evaluate'] }
    if (wants_classifier) {
        def labelled = samples.filter { it[2] != null }.map { meta, genome, labels, vcf -> [meta, labels] }
        SEQSSM_FINETUNE(models.join(labelled))
        def tuned = SEQSSM_FINETUNE.out.model.join(labelled)
        SEQSSM_PREDICT(tuned)
        SEQSSM_EVALUATE(SEQSSM_PREDICT.out.predictions.join(SEQSSM_FINETUNE.out.model))
    }
}

workflow {
    if (!params.input) {
        error "give the samples sheet: --input samples.tsv (tab-separated: sample, genome, labels, vcf)"
    }
    def sheet = file(params.input, checkIfExists: true)
    def samples = Channel.fromPath(sheet)
        .splitCsv(header: true, sep: '\t')
        .map { row ->
            def id = (row.sample ?: '').trim()
            if (!id || id.contains('/')) {
                error "${sheet}: every row needs a sample name without '/' (got '${id}')"
            }
            if (!row.genome) {
                error "${sheet}: sample ${id} has no genome"
            }
            [[id: id], column_file(row, 'genome'), column_file(row, 'labels'), column_file(row, 'vcf')]
        }
    SEQSSM(samples)
}
