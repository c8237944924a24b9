/* bvbench packed bit kernels: sign packing along K into 64-bit words and exact popcount GEMMs.
 *
 * Layouts (all words uint64, bit j of word w = element 64 w + j of a row, padding bits 0):
 *   rows   : A operand, row r starts at a + r * lda (lda >= words).
 *   panels : B operand, BV_NR rows per panel; panel p holds words * BV_NR words, word w of row p*BV_NR+c at
 *            panel[w * BV_NR + c]; rows past n are zero.
 * GEMM: cnt[i][j] = sum_w popcount(op(a_i[w], b_j[w])), op = XOR or AND; the integer result is
 *   r = base + mul * cnt - row_sub[i]   (XOR, base = K, mul = -2: the ±1 dot product K - 2 popcount(a ^ b);
 *                                        AND, mul = 2, row_sub = popcount(a): {0,1} x {±1}; AND, mul = 1),
 * written as int32, or as float y = r * (row_scale[i] * batch_scale[b]) * col_scale[j] + bias[j] (+ y). */
#ifndef BVKERNELS_H
#define BVKERNELS_H

#include <stdint.h>

#define BV_API __attribute__((visibility("default")))
#define BV_ABI_VERSION 3
#define BV_NR 16

enum { BV_PORTABLE = 0, BV_AVX2 = 1, BV_AVX512 = 2 };
enum { BV_OP_XOR = 0, BV_OP_AND = 1 };

typedef struct {
    int64_t batch, m, n, words;
    const uint64_t *a;
    int64_t lda, stride_a;
    const uint64_t *b;
    int64_t stride_b;
    int32_t op, base, mul, accumulate;
    const int32_t *row_sub;
    int64_t stride_row_sub;
    int32_t *out_i32;
    float *out_f32;
    int64_t ldc, stride_c;
    const float *row_scale;
    int64_t stride_row_scale;
    const float *col_scale;
    int64_t stride_col_scale;
    const float *batch_scale;
    const float *bias;
} bv_gemm_args;

typedef struct {
    int64_t rows, k, words;
    const void *x;       /* float32 or uint8 rows */
    int64_t ldx;         /* elements between rows */
    const float *thresh; /* per-row threshold (float input), or NULL: thresh0 */
    float thresh0;
    int32_t strict;      /* float input: bit = x > t (1) or x >= t (0); uint8 input: bit = x != 0 */
    int32_t panel;       /* 0: rows layout (ldo), 1: panels of `group` rows each */
    uint64_t *out;
    int64_t ldo, group, stride_group;
} bv_pack_args;

/* one path's kernels: a row-group micro-kernel over one panel, and the two packers */
typedef void (*bv_tile_fn)(const bv_gemm_args *g, int64_t b, int64_t i0, int mr, int64_t p);
typedef void (*bv_pack_fn)(const bv_pack_args *pa, int64_t r0, int64_t r1);

typedef struct {
    int mr;
    bv_tile_fn tile;
    bv_pack_fn pack_f32;
    bv_pack_fn pack_u8;
} bv_path;

extern const bv_path bv_path_portable;
#if defined(__x86_64__) || defined(__i386__)
extern const bv_path bv_path_avx2;
extern const bv_path bv_path_avx512;
#endif

/* shared helpers (bv_common.c) */
void bv_store_scalar(const bv_gemm_args *g, int64_t b, int64_t i, int64_t j, int64_t cnt);
uint64_t *bv_pack_dest(const bv_pack_args *pa, int64_t r);

/* the scalar packing rule every path shares (tails and the portable path): bit j of the result for x[0..n) */
static inline uint64_t bv_bits_f32(const float *x, int64_t n, float t, int strict) {
    uint64_t bits = 0;
    for (int64_t j = 0; j < n; j++) bits |= (uint64_t)(strict ? x[j] > t : x[j] >= t) << j;
    return bits;
}

static inline uint64_t bv_bits_u8(const uint8_t *x, int64_t n) {
    uint64_t bits = 0;
    for (int64_t j = 0; j < n; j++) bits |= (uint64_t)(x[j] != 0) << j;
    return bits;
}

/* the exported API (bv_common.c); path is BV_PORTABLE | BV_AVX2 | BV_AVX512, threads >= 1 */
BV_API int bv_abi_version(void);
BV_API int bv_supported_paths(void);
BV_API int bv_gemm(int path, const bv_gemm_args *g, int threads);
BV_API int bv_pack_f32(int path, const bv_pack_args *pa, int threads);
BV_API int bv_pack_u8(int path, const bv_pack_args *pa, int threads);
BV_API void bv_panelize(const uint64_t *src, int64_t n, int64_t words, int64_t lds, uint64_t *dst);
BV_API int bv_pack_gemm(int path, const bv_pack_args *pa, const bv_gemm_args *g, int sub_popcount, int threads);
BV_API int bv_absmax_i8(int path, const float *x, int64_t rows, int64_t k, int64_t ldx, int per_row, float qb,
                        float smin, int8_t *codes, float *gamma);
BV_API void bv_i8_epilogue(const int32_t *r, int64_t rows, int64_t n, int32_t shift, const int32_t *wsum,
                           const float *step, int64_t stride_step, const float *col, const float *eta,
                           int64_t stride_eta, const float *bias, float *out);
BV_API void bv_row_popcount(const uint64_t *a, int64_t rows, int64_t words, int64_t lda, int32_t *out);

#endif
