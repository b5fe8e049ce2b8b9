/*
 * Dependency-free reference kernels of perfpredict: direct-loop convolution and triple-loop GEMM.
 *
 * Plain C99, compiled with -O2 and nothing else: no BLAS, no intrinsics, no OpenMP, single-threaded by
 * design. This is the "vanilla" baseline that library primitives are compared against.
 *
 * Every output element is clamped to [lo, hi] after the bias is added (the fused activation:
 * relu = [0, inf], relu6 = [0, 6], none = [-inf, inf]).
 */

#include <stddef.h>

static float clampf(float v, float lo, float hi) {
    if (v < lo) return lo;
    if (v > hi) return hi;
    return v;
}

/*
 * y[n, k, oh, ow] = bias[k] + sum_{c in group(k), u, v} x[n, c, oh*sh - pt + u*dh, ow*sw - pl + v*dw] * w[k, c', u, v]
 *
 * x: N x C x H x W, w: K x (C / groups) x KH x KW, bias: K or NULL, y: N x K x OH x OW (all contiguous NCHW).
 * Taps that fall into the zero padding are skipped (the valid tap range is computed per output row/column).
 */
void pp_conv2d_nchw(const float *x, int N, int C, int H, int W,
                    const float *w, int K, int KH, int KW,
                    const float *bias,
                    int sh, int sw, int pt, int pl, int dh, int dw, int groups,
                    float lo, float hi,
                    float *y, int OH, int OW) {
    const int cg = C / groups;
    const int kg = K / groups;
    for (int n = 0; n < N; ++n) {
        for (int k = 0; k < K; ++k) {
            const int g = k / kg;
            const float b = bias ? bias[k] : 0.0f;
            const float *wk = w + (size_t)k * cg * KH * KW;
            float *yk = y + ((size_t)n * K + k) * OH * OW;
            for (int oh = 0; oh < OH; ++oh) {
                const int ih0 = oh * sh - pt;
                int u0 = 0, u1 = KH;  /* taps u in [u0, u1) land inside 0 <= ih < H */
                while (u0 < KH && ih0 + u0 * dh < 0) ++u0;
                while (u1 > u0 && ih0 + (u1 - 1) * dh >= H) --u1;
                for (int ow = 0; ow < OW; ++ow) {
                    const int iw0 = ow * sw - pl;
                    int v0 = 0, v1 = KW;
                    while (v0 < KW && iw0 + v0 * dw < 0) ++v0;
                    while (v1 > v0 && iw0 + (v1 - 1) * dw >= W) --v1;
                    float acc = 0.0f;
                    for (int c = 0; c < cg; ++c) {
                        const float *xc = x + (((size_t)n * C + (size_t)g * cg + c) * H) * W;
                        const float *wc = wk + (size_t)c * KH * KW;
                        for (int u = u0; u < u1; ++u) {
                            const float *xrow = xc + (size_t)(ih0 + u * dh) * W + iw0;
                            const float *wrow = wc + (size_t)u * KW;
                            for (int v = v0; v < v1; ++v) {
                                acc += xrow[v * dw] * wrow[v];
                            }
                        }
                    }
                    yk[(size_t)oh * OW + ow] = clampf(acc + b, lo, hi);
                }
            }
        }
    }
}

/*
 * y = alpha * a @ op(b) + c, then clamped to [lo, hi].
 *
 * a: M x K (row-major). b: K x N when trans_b == 0, N x K when trans_b == 1.
 * c: M x N (already broadcast and scaled by beta) or NULL. y: M x N.
 */
void pp_gemm(const float *a, const float *b, const float *c, float *y,
             int M, int N, int K, int trans_b, float alpha, float lo, float hi) {
    for (int i = 0; i < M; ++i) {
        const float *ai = a + (size_t)i * K;
        float *yi = y + (size_t)i * N;
        if (trans_b) {
            for (int j = 0; j < N; ++j) {
                const float *bj = b + (size_t)j * K;
                float acc = 0.0f;
                for (int p = 0; p < K; ++p) acc += ai[p] * bj[p];
                yi[j] = acc;
            }
        } else {
            for (int j = 0; j < N; ++j) yi[j] = 0.0f;
            for (int p = 0; p < K; ++p) {
                const float av = ai[p];
                const float *bp = b + (size_t)p * N;
                for (int j = 0; j < N; ++j) yi[j] += av * bp[j];
            }
        }
        for (int j = 0; j < N; ++j) {
            float v = alpha * yi[j];
            if (c) v += c[(size_t)i * N + j];
            yi[j] = clampf(v, lo, hi);
        }
    }
}
