/* DATA.DECODER libjpeg: decode only the window of a JPEG frame that a sample's crop needs.
 *
 * A training crop at 360p covers 40-50 % of a frame's width and 70-90 % of its height, yet every
 * pip-installable decoder converts the whole frame. libjpeg-turbo can skip work outside a
 * window: jpeg_crop_scanline() limits the inverse DCT, upsampling and colour conversion to a
 * band of columns, jpeg_skip_scanlines() only entropy-decodes the rows above it, and nothing
 * below it is read at all. The window is widened by MARGIN pixels on each side (and libjpeg
 * widens it further to whole MCUs) so that the upsampler's edge handling at the band's borders
 * falls outside the pixels we keep: those are bit-identical to a full decode
 * (tests/test_jpeg.py checks that against PIL and simplejpeg).
 *
 * decode(data, out, top, left, out_h, out_w, scale_num): writes rows top.. and columns left.. of
 * the frame, decoded at scale_num/8 of its size, into `out`, a writable C-contiguous uint8
 * buffer of out_h * out_w * 3 bytes (RGB).
 *
 * decode_yuv420(data, luma, chroma, top, left, out_h, out_w, ctop, cleft, c_h, c_w): the stored
 * planes of a 4:2:0 frame (libjpeg's "raw data": no upsampling, no colour conversion), luma rows
 * top.. and columns left.. into `luma` (out_h * out_w bytes), and chroma rows ctop.. and columns
 * cleft.. of Cb, then Cr, into `chroma` (2 * c_h * c_w bytes); chroma rows and columns outside
 * the plane (ctop may be -1) repeat its edge, as data/transforms.py's yuv420_windows does. libjpeg
 * has no column crop or row skip for raw data: every row down to the window's is decoded.
 *
 * Both return the decoded frame's (height, width). Damaged data is an error (libjpeg calls it a
 * warning and fills grey), as are a window outside the frame and any libjpeg error; all raise
 * ValueError with libjpeg's message. The GIL is released while decoding.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>

/* more than the widest chroma upsampling reaches into its neighbours (one MCU of 4:2:0) */
#define MARGIN 16
#define ROWS 16

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
} ErrorManager;

static void on_error(j_common_ptr cinfo) __attribute__((noreturn));

static void on_error(j_common_ptr cinfo)
{
    ErrorManager *err = (ErrorManager *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, err->message);
    longjmp(err->jump, 1);
}

/* Warnings that mean the pixels are wrong (libjpeg goes on with grey blocks, or with the data
 * after junk bytes) end the decode, as simplejpeg does; the others (an unknown JFIF revision, a
 * bad ICC marker, bad SOS parameters that the decoder ignores) do not touch the pixels. */
static void on_message(j_common_ptr cinfo, int level)
{
    if (level != -1)
        return;
    switch (cinfo->err->msg_code) {
    case JWRN_HIT_MARKER:
    case JWRN_HUFF_BAD_CODE:
    case JWRN_ARITH_BAD_CODE:
    case JWRN_JPEG_EOF:
    case JWRN_MUST_RESYNC:
    case JWRN_EXTRANEOUS_DATA:
    case JWRN_BOGUS_PROGRESSION:
        on_error(cinfo);
    default:
        return;
    }
}

typedef struct {
    const unsigned char *data;
    size_t size;
    unsigned char *out;       /* RGB window, or the luma window */
    unsigned char *chroma;    /* planes only: Cb then Cr windows */
    JDIMENSION top, left, out_h, out_w;
    int ctop, cleft;          /* planes only: the chroma window, may start at -1 */
    JDIMENSION c_h, c_w;
    int scale_num;
    JDIMENSION height, width; /* of the decoded frame, set by run() */
    int outside;              /* the window does not fit the decoded frame */
    unsigned char *buffer;    /* rows being decoded; in the Job so that it is freed after a
                                 longjmp too (a local of run() would not be reliable then) */
    char message[JMSG_LENGTH_MAX];
} Job;

static int rgb_window(Job *job, j_decompress_ptr cinfo);
static int yuv420_window(Job *job, j_decompress_ptr cinfo);

static int run(Job *job, int planes)
{
    struct jpeg_decompress_struct cinfo;
    ErrorManager err;
    volatile int ok = 0; /* read after a longjmp */

    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = on_error;
    err.pub.emit_message = on_message;
    jpeg_create_decompress(&cinfo);
    if (setjmp(err.jump)) {
        memcpy(job->message, err.message, sizeof(job->message));
        goto done;
    }
    jpeg_mem_src(&cinfo, job->data, (unsigned long)job->size);
    jpeg_read_header(&cinfo, TRUE);
    cinfo.dct_method = JDCT_ISLOW;   /* PIL's and simplejpeg's default: the same pixels */
    /* Block smoothing (progressive files whose last scans are missing) differs at a column
     * crop's edge in libjpeg-turbo 2.1: off, a window is always the whole decode's pixels. */
    cinfo.do_block_smoothing = FALSE;
    if (planes) {
        jpeg_component_info *c = cinfo.comp_info;
        if (cinfo.num_components != 3 || cinfo.jpeg_color_space != JCS_YCbCr ||
            c[0].h_samp_factor != 2 || c[0].v_samp_factor != 2 || c[1].h_samp_factor != 1 ||
            c[1].v_samp_factor != 1 || c[2].h_samp_factor != 1 || c[2].v_samp_factor != 1) {
            snprintf(job->message, sizeof(job->message), "not a 4:2:0 YCbCr JPEG");
            goto done;
        }
        cinfo.raw_data_out = TRUE;
    } else {
        cinfo.out_color_space = JCS_RGB;
        cinfo.scale_num = (unsigned int)job->scale_num;
        cinfo.scale_denom = 8;
        cinfo.do_fancy_upsampling = TRUE;
    }
    jpeg_calc_output_dimensions(&cinfo); /* before start: a progressive file decodes there */
    job->height = cinfo.output_height;
    job->width = cinfo.output_width;
    if (job->top + job->out_h > job->height || job->left + job->out_w > job->width) {
        job->outside = 1;
        goto done;
    }
    jpeg_start_decompress(&cinfo);
    if (planes ? yuv420_window(job, &cinfo) : rgb_window(job, &cinfo)) {
        /* a window that reached the last row: read on to the end marker, so that junk before
         * it is found as simplejpeg finds it */
        if (cinfo.output_scanline >= cinfo.output_height)
            jpeg_finish_decompress(&cinfo);
        ok = 1;
    }
done:
    free(job->buffer);
    job->buffer = NULL;
    jpeg_destroy_decompress(&cinfo); /* also abandons the rows below the window */
    return ok;
}

/* The RGB window through libjpeg's column crop and row skip. */
static int rgb_window(Job *job, j_decompress_ptr cinfo)
{
    JDIMENSION x0 = job->left > MARGIN ? job->left - MARGIN : 0;
    JDIMENSION x1 = job->left + job->out_w + MARGIN;
    if (x1 > job->width)
        x1 = job->width;
    JDIMENSION band = x1 - x0;
    if (band < job->width)
        jpeg_crop_scanline(cinfo, &x0, &band); /* moves x0 left, band wider: whole MCUs */
    /* rows are read in batches: libjpeg's upsampler makes a row group at a time and, asked
     * for one row, stages the rest of the group through a spare buffer */
    const JDIMENSION batch = ROWS;
    const size_t width3 = (size_t)cinfo->output_width * 3;
    unsigned char *row = job->buffer = malloc(width3 * batch);
    if (row == NULL) {
        snprintf(job->message, sizeof(job->message), "out of memory");
        return 0;
    }
    JDIMENSION y0 = job->top > MARGIN ? job->top - MARGIN : 0;
    if (y0 > 0)
        jpeg_skip_scanlines(cinfo, y0);
    const size_t stride = (size_t)job->out_w * 3, shift = (size_t)(job->left - x0) * 3;
    JSAMPROW rows[ROWS];
    for (JDIMENSION k = 0; k < batch; k++)
        rows[k] = row + k * width3;
    const JDIMENSION end = job->top + job->out_h;
    while (cinfo->output_scanline < end) {
        JDIMENSION first = cinfo->output_scanline, want = end - first;
        JDIMENSION got = jpeg_read_scanlines(cinfo, rows, want < batch ? want : batch);
        if (got == 0) {
            snprintf(job->message, sizeof(job->message), "no scanline %u", first);
            return 0;
        }
        for (JDIMENSION k = 0; k < got; k++)
            if (first + k >= job->top)
                memcpy(job->out + (size_t)(first + k - job->top) * stride, rows[k] + shift,
                       stride);
    }
    return 1;
}

static JDIMENSION clamp(long long v, JDIMENSION n)
{
    return v < 0 ? 0 : (v >= (long long)n ? n - 1 : (JDIMENSION)v);
}

/* One chroma row of the window: columns cleft.. of `src` (a plane row of `n` samples), the
 * ones outside the plane repeating its edge. */
static void chroma_row(unsigned char *dst, const unsigned char *src, int cleft, JDIMENSION c_w,
                       JDIMENSION n)
{
    for (JDIMENSION j = 0; j < c_w; j++) {
        long long x = (long long)cleft + j;
        if (x >= 0 && x < (long long)n) { /* the inside of the plane: one copy */
            JDIMENSION run = n - (JDIMENSION)x < c_w - j ? n - (JDIMENSION)x : c_w - j;
            memcpy(dst + j, src + x, run);
            j += run - 1;
        } else {
            dst[j] = src[clamp(x, n)];
        }
    }
}

/* The Y, Cb, Cr windows from libjpeg's raw data, one iMCU row (16 luma, 8 chroma rows) at a
 * time, stopping after the last row the windows need. */
static int yuv420_window(Job *job, j_decompress_ptr cinfo)
{
    jpeg_component_info *comp = cinfo->comp_info;
    const JDIMENSION ywidth = comp[0].width_in_blocks * DCTSIZE;
    const JDIMENSION cwidth = comp[1].width_in_blocks * DCTSIZE;
    const JDIMENSION ch = comp[1].downsampled_height, cw = comp[1].downsampled_width;
    const size_t need = (size_t)16 * ywidth + (size_t)2 * 8 * cwidth;
    unsigned char *mem = job->buffer = malloc(need);
    if (mem == NULL) {
        snprintf(job->message, sizeof(job->message), "out of memory");
        return 0;
    }
    JSAMPROW yrows[16], cbrows[8], crrows[8];
    for (int k = 0; k < 16; k++)
        yrows[k] = mem + (size_t)k * ywidth;
    for (int k = 0; k < 8; k++) {
        cbrows[k] = mem + (size_t)16 * ywidth + (size_t)k * cwidth;
        crrows[k] = mem + (size_t)16 * ywidth + (size_t)(8 + k) * cwidth;
    }
    JSAMPARRAY planes[3] = {yrows, cbrows, crrows};
    const JDIMENSION ybottom = job->top + job->out_h;
    const JDIMENSION cfirst = clamp(job->ctop, ch);
    const JDIMENSION clast = clamp((long long)job->ctop + job->c_h - 1, ch);
    while (cinfo->output_scanline < cinfo->output_height) {
        const JDIMENSION y0 = cinfo->output_scanline, c0 = y0 / 2;
        if (y0 >= ybottom && c0 > clast)
            break;
        if (jpeg_read_raw_data(cinfo, planes, 16) == 0) {
            snprintf(job->message, sizeof(job->message), "no data at row %u", y0);
            return 0;
        }
        for (JDIMENSION y = y0 > job->top ? y0 : job->top; y < y0 + 16 && y < ybottom; y++)
            memcpy(job->out + (size_t)(y - job->top) * job->out_w, yrows[y - y0] + job->left,
                   job->out_w);
        if (c0 + 8 <= cfirst || c0 > clast)
            continue;
        for (JDIMENSION i = 0; i < job->c_h; i++) {
            JDIMENSION src = clamp((long long)job->ctop + i, ch);
            if (src < c0 || src >= c0 + 8)
                continue;
            size_t at = (size_t)i * job->c_w, plane = (size_t)job->c_h * job->c_w;
            chroma_row(job->chroma + at, cbrows[src - c0], job->cleft, job->c_w, cw);
            chroma_row(job->chroma + plane + at, crrows[src - c0], job->cleft, job->c_w, cw);
        }
    }
    return 1;
}

/* A buffer of exactly `size` bytes, else a ValueError naming `what` (the "w*" format has
 * already refused read-only and non-contiguous ones, with a TypeError or BufferError). */
static int check_out(Py_buffer *buf, Py_ssize_t size, const char *what)
{
    if (buf->len == size)
        return 1;
    PyErr_Format(PyExc_ValueError, "%s must be a writable contiguous buffer of %zd bytes "
                 "(got %zd)", what, size, buf->len);
    return 0;
}

/* JPEG's own limit on a side: bounds the sizes before they are multiplied */
#define MAX_SIDE 65535

/* Runs the job without the GIL; its result or the ValueError. */
static PyObject *finish(Job *job, int planes)
{
    int ok;
    Py_BEGIN_ALLOW_THREADS
    ok = run(job, planes);
    Py_END_ALLOW_THREADS
    if (job->outside)
        return PyErr_Format(PyExc_ValueError, "a %ux%u window at x=%u, y=%u is outside the "
                            "%ux%u frame", job->out_w, job->out_h, job->left, job->top,
                            job->width, job->height);
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, job->message);
        return NULL;
    }
    return Py_BuildValue("(II)", job->height, job->width);
}

static PyObject *decode(PyObject *self, PyObject *args)
{
    Py_buffer src, dst;
    int top, left, out_h, out_w, scale_num;

    if (!PyArg_ParseTuple(args, "y*w*iiiii", &src, &dst, &top, &left, &out_h, &out_w,
                          &scale_num))
        return NULL;
    PyObject *result = NULL;
    if (top < 0 || left < 0 || out_h < 1 || out_w < 1 || out_h > MAX_SIDE ||
        out_w > MAX_SIDE || scale_num < 1 || scale_num > 16)
        PyErr_Format(PyExc_ValueError, "bad window %dx%d at x=%d, y=%d or scale %d/8",
                     out_w, out_h, left, top, scale_num);
    else if (check_out(&dst, (Py_ssize_t)out_h * out_w * 3, "out")) {
        Job job = {.data = src.buf, .size = (size_t)src.len, .out = dst.buf,
                   .top = (JDIMENSION)top, .left = (JDIMENSION)left,
                   .out_h = (JDIMENSION)out_h, .out_w = (JDIMENSION)out_w,
                   .scale_num = scale_num};
        result = finish(&job, 0);
    }
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    return result;
}

static PyObject *decode_yuv420(PyObject *self, PyObject *args)
{
    Py_buffer src, luma, chroma;
    int top, left, out_h, out_w, ctop, cleft, c_h, c_w;

    if (!PyArg_ParseTuple(args, "y*w*w*iiiiiiii", &src, &luma, &chroma, &top, &left, &out_h,
                          &out_w, &ctop, &cleft, &c_h, &c_w))
        return NULL;
    PyObject *result = NULL;
    if (top < 0 || left < 0 || out_h < 1 || out_w < 1 || c_h < 1 || c_w < 1 ||
        out_h > MAX_SIDE || out_w > MAX_SIDE || c_h > MAX_SIDE || c_w > MAX_SIDE)
        PyErr_Format(PyExc_ValueError, "bad window %dx%d at x=%d, y=%d (chroma %dx%d)",
                     out_w, out_h, left, top, c_w, c_h);
    else if (check_out(&luma, (Py_ssize_t)out_h * out_w, "luma") &&
             check_out(&chroma, (Py_ssize_t)2 * c_h * c_w, "chroma")) {
        Job job = {.data = src.buf, .size = (size_t)src.len, .out = luma.buf,
                   .chroma = chroma.buf, .top = (JDIMENSION)top, .left = (JDIMENSION)left,
                   .out_h = (JDIMENSION)out_h, .out_w = (JDIMENSION)out_w, .ctop = ctop,
                   .cleft = cleft, .c_h = (JDIMENSION)c_h, .c_w = (JDIMENSION)c_w,
                   .scale_num = 8};
        result = finish(&job, 1);
    }
    PyBuffer_Release(&src);
    PyBuffer_Release(&luma);
    PyBuffer_Release(&chroma);
    return result;
}

static PyMethodDef methods[] = {
    {"decode", decode, METH_VARARGS,
     "decode(data, out, top, left, out_h, out_w, scale_num) -> (height, width)\n\n"
     "Decode the window [top:top+out_h, left:left+out_w] of the JPEG `data`, at scale_num/8 of"
     "\nits size, as RGB into the writable buffer `out`; the decoded frame's size is returned."},
    {"decode_yuv420", decode_yuv420, METH_VARARGS,
     "decode_yuv420(data, luma, chroma, top, left, out_h, out_w, ctop, cleft, c_h, c_w)\n"
     "-> (height, width)\n\n"
     "The stored planes of a 4:2:0 JPEG: the luma window into `luma`, the Cb and Cr windows\n"
     "(rows ctop.., columns cleft.., the plane's edge repeated outside it) into `chroma`."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_libjpeg",
                                    "Window decode of JPEG frames over libjpeg-turbo.", -1,
                                    methods};

PyMODINIT_FUNC PyInit__libjpeg(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "LIBJPEG_TURBO_VERSION",
                                             LIBJPEG_TURBO_VERSION_NUMBER) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
