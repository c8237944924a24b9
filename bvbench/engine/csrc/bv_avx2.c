/* AVX2 path: nibble-table popcount (vpshufb of the low and high nibbles) summed as bytes over blocks of 31
 * words, then vpsadbw per 64-bit lane; one A word broadcast against a 16-row panel (four ymm), 2 rows at a time. Target attributes, as in bv_avx512.c. */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include "bvkernels.h"

#define BV_T256 __attribute__((target("avx2,popcnt")))
#define BV_INLINE static inline __attribute__((always_inline))
#define BV_MR256 2
#define BV_BLK256 31 /* words per byte-count block: 31 * 8 = 248 < 256 */

BV_T256 BV_INLINE __m256i op256(__m256i a, __m256i b, const int op) {
    return op == BV_OP_AND ? _mm256_and_si256(a, b) : _mm256_xor_si256(a, b);
}

/* four 64-bit counts (all < 2^31) from each of c0, c1 -> eight int32 in column order */
BV_T256 BV_INLINE __m256i narrow256(__m256i c0, __m256i c1) {
    const __m256i even = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    __m256i l0 = _mm256_permutevar8x32_epi32(c0, even), l1 = _mm256_permutevar8x32_epi32(c1, even);
    return _mm256_permute2x128_si256(l0, l1, 0x20);
}

/* eight outputs j0 .. j0+7 of row i (lanes >= nc masked), the formula of bv_store_scalar */
BV_T256 BV_INLINE void store8_256(const bv_gemm_args *g, int64_t b, int64_t i, int64_t j0, int64_t nc,
                                 __m256i cnt) {
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(nc < 8 ? nc : 8)), lanes);
    int32_t sub = g->row_sub ? g->row_sub[b * g->stride_row_sub + i] : 0;
    __m256i base = _mm256_set1_epi32(g->base - sub), r; /* mul is -2, 1 or 2 for every caller: no mullo */
    if (g->mul == -2)
        r = _mm256_sub_epi32(base, _mm256_add_epi32(cnt, cnt));
    else if (g->mul == 2)
        r = _mm256_add_epi32(base, _mm256_add_epi32(cnt, cnt));
    else if (g->mul == 1)
        r = _mm256_add_epi32(base, cnt);
    else
        r = _mm256_add_epi32(base, _mm256_mullo_epi32(cnt, _mm256_set1_epi32(g->mul)));
    int64_t o = b * g->stride_c + i * g->ldc + j0;
    if (g->out_f32 == NULL) {
        if (g->accumulate) r = _mm256_add_epi32(r, _mm256_maskload_epi32(g->out_i32 + o, mask));
        _mm256_maskstore_epi32(g->out_i32 + o, mask, r);
        return;
    }
    float s = 1.0f;
    if (g->row_scale) s = g->row_scale[b * g->stride_row_scale + i];
    if (g->batch_scale) s = s * g->batch_scale[b];
    __m256 y = _mm256_mul_ps(_mm256_cvtepi32_ps(r), _mm256_set1_ps(s));
    if (g->col_scale)
        y = _mm256_mul_ps(y, _mm256_maskload_ps(g->col_scale + b * g->stride_col_scale + j0, mask));
    if (g->bias) y = _mm256_add_ps(y, _mm256_maskload_ps(g->bias + j0, mask));
    if (g->accumulate) y = _mm256_add_ps(y, _mm256_maskload_ps(g->out_f32 + o, mask));
    _mm256_maskstore_ps(g->out_f32 + o, mask, y);
}

BV_T256 BV_INLINE void tile256(const bv_gemm_args *g, int64_t b, int64_t i0, int64_t p, const int mr,
                              const int op) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2,
                                         3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low4 = _mm256_set1_epi8(0x0F), zero = _mm256_setzero_si256();
    const uint64_t *a = g->a + b * g->stride_a + i0 * g->lda;
    const uint64_t *pn = g->b + b * g->stride_b + p * g->words * BV_NR;
    const int64_t lda = g->lda;
    __m256i acc[BV_MR256][4];
#pragma GCC unroll 2
    for (int r = 0; r < mr; r++) acc[r][0] = acc[r][1] = acc[r][2] = acc[r][3] = zero;
    for (int64_t w0 = 0; w0 < g->words; w0 += BV_BLK256) {
        const int64_t w1 = w0 + BV_BLK256 < g->words ? w0 + BV_BLK256 : g->words;
        __m256i c8[BV_MR256][4]; /* byte counts: at most 8 per word and byte, so < 256 over a block */
#pragma GCC unroll 2
        for (int r = 0; r < mr; r++) c8[r][0] = c8[r][1] = c8[r][2] = c8[r][3] = zero;
        for (int64_t w = w0; w < w1; w++) {
#pragma GCC unroll 4
            for (int q = 0; q < 4; q++) {
                __m256i bq = _mm256_loadu_si256((const __m256i *)(pn + w * BV_NR + 4 * q));
#pragma GCC unroll 2
                for (int r = 0; r < mr; r++) {
                    __m256i x = op256(_mm256_set1_epi64x((long long)a[r * lda + w]), bq, op);
                    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), low4);
                    c8[r][q] = _mm256_add_epi8(c8[r][q], _mm256_shuffle_epi8(lut, _mm256_and_si256(x, low4)));
                    c8[r][q] = _mm256_add_epi8(c8[r][q], _mm256_shuffle_epi8(lut, hi));
                }
            }
        }
#pragma GCC unroll 2
        for (int r = 0; r < mr; r++)
#pragma GCC unroll 4
            for (int q = 0; q < 4; q++) acc[r][q] = _mm256_add_epi64(acc[r][q], _mm256_sad_epu8(c8[r][q], zero));
    }
    int64_t nc = g->n - p * BV_NR;
#pragma GCC unroll 2
    for (int r = 0; r < mr; r++) {
        store8_256(g, b, i0 + r, p * BV_NR, nc, narrow256(acc[r][0], acc[r][1]));
        if (nc > 8) store8_256(g, b, i0 + r, p * BV_NR + 8, nc - 8, narrow256(acc[r][2], acc[r][3]));
    }
}

BV_T256 static void x2(const bv_gemm_args *g, int64_t b, int64_t i0, int64_t p) {
    tile256(g, b, i0, p, 2, BV_OP_XOR);
}
BV_T256 static void x1(const bv_gemm_args *g, int64_t b, int64_t i0, int64_t p) {
    tile256(g, b, i0, p, 1, BV_OP_XOR);
}
BV_T256 static void n2(const bv_gemm_args *g, int64_t b, int64_t i0, int64_t p) {
    tile256(g, b, i0, p, 2, BV_OP_AND);
}
BV_T256 static void n1(const bv_gemm_args *g, int64_t b, int64_t i0, int64_t p) {
    tile256(g, b, i0, p, 1, BV_OP_AND);
}

static void bv_tile_avx2(const bv_gemm_args *g, int64_t b, int64_t i0, int mr, int64_t p) {
    if (g->op == BV_OP_AND)
        (mr == 2 ? n2 : n1)(g, b, i0, p);
    else
        (mr == 2 ? x2 : x1)(g, b, i0, p);
}

/* eight floats per compare + movemask; the tail of a row compares one element at a time */
BV_T256 static void bv_pack_f32_avx2(const bv_pack_args *pa, int64_t r0, int64_t r1) {
    const int64_t ws = pa->panel ? BV_NR : 1;
    for (int64_t r = r0; r < r1; r++) {
        const float *x = (const float *)pa->x + r * pa->ldx;
        const float ts = pa->thresh ? pa->thresh[r] : pa->thresh0;
        const __m256 t = _mm256_set1_ps(ts);
        uint64_t *dst = bv_pack_dest(pa, r);
        for (int64_t w = 0; w < pa->words; w++) {
            uint64_t bits = 0;
            for (int q = 0; q < 8; q++) {
                int64_t idx = 64 * w + 8 * q, left = pa->k - idx;
                if (left <= 0) break;
                if (left >= 8) {
                    __m256 v = _mm256_loadu_ps(x + idx);
                    __m256 c = pa->strict ? _mm256_cmp_ps(v, t, _CMP_GT_OQ) : _mm256_cmp_ps(v, t, _CMP_GE_OQ);
                    bits |= (uint64_t)(unsigned)_mm256_movemask_ps(c) << (8 * q);
                } else {
                    bits |= bv_bits_f32(x + idx, left, ts, pa->strict) << (8 * q);
                }
            }
            dst[w * ws] = bits;
        }
    }
}

/* thirty-two bytes per compare with zero + movemask: bit = x != 0 */
BV_T256 static void bv_pack_u8_avx2(const bv_pack_args *pa, int64_t r0, int64_t r1) {
    const int64_t ws = pa->panel ? BV_NR : 1;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *x = (const uint8_t *)pa->x + r * pa->ldx;
        uint64_t *dst = bv_pack_dest(pa, r);
        for (int64_t w = 0; w < pa->words; w++) {
            uint64_t bits = 0;
            for (int q = 0; q < 2; q++) {
                int64_t idx = 64 * w + 32 * q, left = pa->k - idx;
                if (left <= 0) break;
                if (left >= 32) {
                    __m256i v = _mm256_loadu_si256((const __m256i *)(x + idx));
                    __m256i z = _mm256_cmpeq_epi8(v, _mm256_setzero_si256());
                    bits |= (uint64_t)(~(uint32_t)_mm256_movemask_epi8(z)) << (32 * q);
                } else {
                    bits |= bv_bits_u8(x + idx, left) << (32 * q);
                }
            }
            dst[w * ws] = bits;
        }
    }
}

const bv_path bv_path_avx2 = {BV_MR256, bv_tile_avx2, bv_pack_f32_avx2, bv_pack_u8_avx2};
#endif
