/*
 * registry.c — the table from manifest "type" names to block implementations.
 * One line per block type; the implementations live in the other files of blocks/.
 */
#include <string.h>
#include "../block.h"

extern const struct blk_ops blk_allinone_ops;
extern const struct blk_ops blk_nice_ops, blk_rnvp_ops, blk_glow_ops, blk_gin_ops,
    blk_onesided_ops, blk_condaffine_ops;
extern const struct blk_ops blk_spline_ops;
extern const struct blk_ops blk_permute_ops, blk_fixedlinear_ops, blk_orthogonal_ops,
    blk_householder_ops;
extern const struct blk_ops blk_actnorm_ops, blk_elemscale_ops, blk_sigmoid_ops;
extern const struct blk_ops blk_invdense_ops;
extern const struct blk_ops blk_iresnet_ops;
extern const struct blk_ops blk_maf_ops, blk_mrqs_ops;
extern const struct blk_ops blk_rqscoupling_ops, blk_lulinear_ops;
extern const struct blk_ops blk_zuko_ops;
extern const struct blk_ops blk_conv1x1_ops, blk_haar_down_ops, blk_haar_up_ops,
    blk_irevnet_down_ops, blk_irevnet_up_ops;
extern const struct blk_ops blk_invautofc_ops, blk_invautoconv_ops, blk_invautoact_ops,
    blk_invautoact2_ops;
extern const struct blk_ops blk_gmm_ops, blk_inverse_ops, blk_erqs_ops, blk_linspline_ops;
extern const struct blk_ops blk_flatten_ops, blk_reshape_ops;

static const struct blk_ops *const table[] = {
    &blk_allinone_ops,  &blk_nice_ops,        &blk_rnvp_ops,       &blk_glow_ops,
    &blk_gin_ops,       &blk_onesided_ops,    &blk_condaffine_ops, &blk_spline_ops,
    &blk_permute_ops,   &blk_fixedlinear_ops, &blk_orthogonal_ops, &blk_householder_ops,
    &blk_actnorm_ops,   &blk_elemscale_ops,   &blk_sigmoid_ops,    &blk_invdense_ops,   &blk_iresnet_ops,
    &blk_maf_ops,       &blk_mrqs_ops,        &blk_rqscoupling_ops, &blk_lulinear_ops,
    &blk_zuko_ops,
    &blk_conv1x1_ops,   &blk_haar_down_ops,   &blk_haar_up_ops,    &blk_irevnet_down_ops,
    &blk_irevnet_up_ops,
    &blk_invautofc_ops, &blk_invautoconv_ops, &blk_invautoact_ops, &blk_invautoact2_ops,
    &blk_gmm_ops,       &blk_inverse_ops,     &blk_erqs_ops,       &blk_linspline_ops,
    &blk_flatten_ops,   &blk_reshape_ops,
};

const struct blk_ops *blk_lookup(const char *type)
{
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
        if (strcmp(table[i]->type, type) == 0)
            return table[i];
    return NULL;
}

const char *blk_known_types(void)
{
    return "AllInOneBlock, NICECouplingBlock, RNVPCouplingBlock, GLOWCouplingBlock, "
           "GINCouplingBlock, AffineCouplingOneSided, ConditionalAffineTransform, "
           "RationalQuadraticSpline, PermuteRandom, FixedLinearTransform, OrthogonalTransform, "
           "HouseholderPerm, ActNorm, LearnedElementwiseScaling, InvertibleSigmoid, "
           "InvertibleDense, IResNetBlock, MaskedAffineAutoregressive, MaskedRQSAutoregressive, "
           "RQSCoupling, LULinear, ZukoMaskedAutoregressive, Fixed1x1Conv, HaarDownsampling, "
           "HaarUpsampling, IRevNetDownsampling, IRevNetUpsampling, InvAutoFC, InvAutoConv2D, "
           "InvAutoAct, InvAutoActTwoSided, GaussianMixtureModel, Inverse, "
           "ElementwiseRationalQuadraticSpline, LinearSpline, Flatten, Reshape";
}
