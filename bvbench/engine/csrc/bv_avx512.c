/* AVX-512 path: VPOPCNTDQ popcount, one A word broadcast against a 16-row panel (two zmm), 4 rows at a time:
 * 8 accumulators, no horizontal reductions (each 64-bit lane is one output). Compiled with target
 * attributes, so the build machine's -march does not matter; bv_supported_paths() gates every call. */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include "bvkernels.h"

#define BV_T512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vpopcntdq,popcnt")))
#define BV_INLINE static inline __attribute__((always_inline))
#define BV_MR512 4 /* 8 accumulators; 8 rows measured no faster: the loop is bound by VPOPCNTQ throughput */

BV_T512 BV_INLINE __m512i op512(__m512i a, __m512i b, const int op) {
    return op == BV_OP_AND ? _mm512_and_si512(a, b) : _mm512_xor_si512(a, b);
}

/* 16 counts of one output row -> int32 or float epilogue (see bv_store_scalar for the formula). The even
 * dwords of (c_lo, c_hi) are the 16 counts (each < 2^31); mul is -2, 1 or 2 for every caller, so the product
 * is a shift (mullo is two uops at ten cycles' latency, which shows at K = 64). */
BV_T512 BV_INLINE void store_row512(const bv_gemm_args *g, int64_t b, int64_t i, int64_t j0, __mmask16 mask,
                                   __m512i c_lo, __m512i c_hi) {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    __m512i cnt = _mm512_permutex2var_epi32(c_lo, even, c_hi);
    int32_t sub = g->row_sub ? g->row_sub[b * g->stride_row_sub + i] : 0;
    __m512i base = _mm512_set1_epi32(g->base - sub), r;
    if (g->mul == -2)
        r = _mm512_sub_epi32(base, _mm512_add_epi32(cnt, cnt));
    else if (g->mul == 2)
        r = _mm512_add_epi32(base, _mm512_add_epi32(cnt, cnt));
    else if (g->mul == 1)
        r = _mm512_add_epi32(base, cnt);
    else
        r = _mm512_add_epi32(base, _mm512_mullo_epi32(cnt, _mm512_set1_epi32(g->mul)));
    int64_t o = b * g->stride_c + i * g->ldc + j0;
    if (g->out_f32 == NULL) {
        if (g->accumulate) r = _mm512_add_epi32(r, _mm512_maskz_loadu_epi32(mask, g->out_i32 + o));
        _mm512_mask_storeu_epi32(g->out_i32 + o, mask, r);
        return;
    }
    float s = 1.0f;
    if (g->row_scale) s = g->row_scale[b * g->stride_row_scale + i];
    if (g->batch_scale) s = s * g->batch_scale[b];
    __m512 y = _mm512_mul_ps(_mm512_cvtepi32_ps(r), _mm512_set1_ps(s));
    if (g->col_scale)
        y = _mm512_mul_ps(y, _mm512_maskz_loadu_ps(mask, g->col_scale + b * g->stride_col_scale + j0));
    if (g->bias) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(mask, g->bias + j0));
    if (g->accumulate) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(mask, g->out_f32 + o));
    _mm512_mask_storeu_ps(g->out_f32 + o, mask, y);
}

BV_T512 BV_INLINE void tile512(const bv_gemm_args *g, int64_t b, int64_t i0, int64_t p, const int mr,
                              const int op) {
    const uint64_t *a = g->a + b * g->stride_a + i0 * g->lda;
    const uint64_t *pn = g->b + b * g->stride_b + p * g->words * BV_NR;
    const int64_t lda = g->lda;
    __m512i acc[BV_MR512][2];
#pragma GCC unroll 4
    for (int r = 0; r < mr; r++) acc[r][0] = acc[r][1] = _mm512_setzero_si512();
    for (int64_t w = 0; w < g->words; w++) {
        __m512i b0 = _mm512_loadu_si512((const void *)(pn + w * BV_NR));
        __m512i b1 = _mm512_loadu_si512((const void *)(pn + w * BV_NR + 8));
#pragma GCC unroll 4
        for (int r = 0; r < mr; r++) {
            __m512i av = _mm512_set1_epi64((long long)a[r * lda + w]);
            acc[r][0] = _mm512_add_epi64(acc[r][0], _mm512_popcnt_epi64(op512(av, b0, op)));
            acc[r][1] = _mm512_add_epi64(acc[r][1], _mm512_popcnt_epi64(op512(av, b1, op)));
        }
    }
    int64_t nc = g->n - p * BV_NR;
    __mmask16 mask = nc >= BV_NR ? (__mmask16)0xFFFF : (__mmask16)((1u << nc) - 1);
#pragma GCC unroll 4
    for (int r = 0; r < mr; r++) store_row512(g, b, i0 + r, p * BV_NR, mask, acc[r][0], acc[r][1]);
}

#define BV_TILE512(MR, OP, NAME)                                                                   \
    BV_T512 static void NAME(const bv_gemm_args *g, int64_t b, int64_t i0, int64_t p) {            \
        tile512(g, b, i0, p, MR, OP);                                                              \
    }
BV_TILE512(4, BV_OP_XOR, x4)
BV_TILE512(3, BV_OP_XOR, x3)
BV_TILE512(2, BV_OP_XOR, x2)
BV_TILE512(1, BV_OP_XOR, x1)
BV_TILE512(4, BV_OP_AND, n4)
BV_TILE512(3, BV_OP_AND, n3)
BV_TILE512(2, BV_OP_AND, n2)
BV_TILE512(1, BV_OP_AND, n1)

typedef void (*bv_tile512_fn)(const bv_gemm_args *, int64_t, int64_t, int64_t);
static const bv_tile512_fn tiles512[2][BV_MR512] = {{x1, x2, x3, x4}, {n1, n2, n3, n4}};

static void bv_tile_avx512(const bv_gemm_args *g, int64_t b, int64_t i0, int mr, int64_t p) {
    tiles512[g->op == BV_OP_AND][mr - 1](g, b, i0, p);
}

/* sixteen floats per compare: bit = x >= t (x > t when strict); tail lanes masked out of load and compare */
BV_T512 static void bv_pack_f32_avx512(const bv_pack_args *pa, int64_t r0, int64_t r1) {
    const int64_t ws = pa->panel ? BV_NR : 1;
    for (int64_t r = r0; r < r1; r++) {
        const float *x = (const float *)pa->x + r * pa->ldx;
        const __m512 t = _mm512_set1_ps(pa->thresh ? pa->thresh[r] : pa->thresh0);
        uint64_t *dst = bv_pack_dest(pa, r);
        for (int64_t w = 0; w < pa->words; w++) {
            uint64_t bits = 0;
            for (int q = 0; q < 4; q++) {
                int64_t idx = 64 * w + 16 * q, left = pa->k - idx;
                if (left <= 0) break;
                __mmask16 m = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
                __m512 v = _mm512_maskz_loadu_ps(m, x + idx);
                __mmask16 c = pa->strict ? _mm512_mask_cmp_ps_mask(m, v, t, _CMP_GT_OQ)
                                         : _mm512_mask_cmp_ps_mask(m, v, t, _CMP_GE_OQ);
                bits |= (uint64_t)c << (16 * q);
            }
            dst[w * ws] = bits;
        }
    }
}

/* sixty-four bytes per test: bit = x != 0 */
BV_T512 static void bv_pack_u8_avx512(const bv_pack_args *pa, int64_t r0, int64_t r1) {
    const int64_t ws = pa->panel ? BV_NR : 1;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *x = (const uint8_t *)pa->x + r * pa->ldx;
        uint64_t *dst = bv_pack_dest(pa, r);
        for (int64_t w = 0; w < pa->words; w++) {
            int64_t left = pa->k - 64 * w;
            __mmask64 m = left >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << left) - 1);
            __m512i v = _mm512_maskz_loadu_epi8(m, x + 64 * w);
            dst[w * ws] = (uint64_t)_mm512_test_epi8_mask(v, v);
        }
    }
}

const bv_path bv_path_avx512 = {BV_MR512, bv_tile_avx512, bv_pack_f32_avx512, bv_pack_u8_avx512};
#endif
