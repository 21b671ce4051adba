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
 * One function, decode(data, out, top, left, scale_num): writes rows top.. and columns left.. of
 * the frame, decoded at scale_num/8 of its size, into `out`, a writable C-contiguous uint8
 * buffer of height * width * 3 bytes (RGB), whose height and width are given by the caller as
 * out_h, out_w. Returns the decoded frame's (height, width). Damaged data is an error
 * (libjpeg calls it a warning and fills grey), as are a window outside the frame and any libjpeg
 * error; all raise ValueError with libjpeg's message. The GIL is released while decoding.
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

static void on_error(j_common_ptr cinfo)
{
    ErrorManager *err = (ErrorManager *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, err->message);
    longjmp(err->jump, 1);
}

/* Warnings that mean the pixels are wrong (libjpeg goes on with grey blocks) end the decode;
 * the others (an unknown JFIF revision, a bad ICC marker) do not touch the pixels. */
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
    case JWRN_NOT_SEQUENTIAL:
    case JWRN_BOGUS_PROGRESSION:
        on_error(cinfo);
    default:
        return;
    }
}

typedef struct {
    const unsigned char *data;
    size_t size;
    unsigned char *out;
    JDIMENSION top, left, out_h, out_w;
    int scale_num;
    JDIMENSION height, width; /* of the decoded frame, set by run() */
    int outside;              /* the window does not fit the decoded frame */
    char message[JMSG_LENGTH_MAX];
} Job;

static int run(Job *job)
{
    struct jpeg_decompress_struct cinfo;
    ErrorManager err;
    unsigned char *volatile row = NULL;
    int ok = 0;

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
    cinfo.out_color_space = JCS_RGB;
    cinfo.scale_num = (unsigned int)job->scale_num;
    cinfo.scale_denom = 8;
    cinfo.dct_method = JDCT_ISLOW;   /* PIL's and simplejpeg's default: the same pixels */
    cinfo.do_fancy_upsampling = TRUE;
    jpeg_start_decompress(&cinfo);
    job->height = cinfo.output_height;
    job->width = cinfo.output_width;
    if (job->top + job->out_h > job->height || job->left + job->out_w > job->width) {
        job->outside = 1;
        goto done;
    }

    JDIMENSION x0 = job->left > MARGIN ? job->left - MARGIN : 0;
    JDIMENSION x1 = job->left + job->out_w + MARGIN;
    if (x1 > job->width)
        x1 = job->width;
    JDIMENSION band = x1 - x0;
    if (band < job->width)
        jpeg_crop_scanline(&cinfo, &x0, &band); /* moves x0 left, band wider: whole MCUs */
    /* rows are read in batches: libjpeg's upsampler makes a row group at a time and, asked
     * for one row, stages the rest of the group through a spare buffer */
    const JDIMENSION batch = ROWS;
    const size_t width3 = (size_t)cinfo.output_width * 3;
    row = malloc(width3 * batch);
    if (row == NULL) {
        snprintf(job->message, sizeof(job->message), "out of memory");
        goto done;
    }
    JDIMENSION y0 = job->top > MARGIN ? job->top - MARGIN : 0;
    if (y0 > 0)
        jpeg_skip_scanlines(&cinfo, y0);
    const size_t stride = (size_t)job->out_w * 3, shift = (size_t)(job->left - x0) * 3;
    JSAMPROW rows[ROWS];
    for (JDIMENSION k = 0; k < batch; k++)
        rows[k] = row + k * width3;
    const JDIMENSION end = job->top + job->out_h;
    while (cinfo.output_scanline < end) {
        JDIMENSION first = cinfo.output_scanline, want = end - first;
        JDIMENSION got = jpeg_read_scanlines(&cinfo, rows, want < batch ? want : batch);
        if (got == 0) {
            snprintf(job->message, sizeof(job->message), "no scanline %u", first);
            goto done;
        }
        for (JDIMENSION k = 0; k < got; k++)
            if (first + k >= job->top)
                memcpy(job->out + (size_t)(first + k - job->top) * stride, rows[k] + shift,
                       stride);
    }
    ok = 1;
done:
    free(row);
    jpeg_destroy_decompress(&cinfo); /* also abandons the rows below the window */
    return ok;
}

static PyObject *decode(PyObject *self, PyObject *args)
{
    Py_buffer src, dst;
    int top, left, out_h, out_w, scale_num;

    if (!PyArg_ParseTuple(args, "y*w*iiiii", &src, &dst, &top, &left, &out_h, &out_w,
                          &scale_num))
        return NULL;
    PyObject *result = NULL;
    if (top < 0 || left < 0 || out_h < 1 || out_w < 1 || scale_num < 1 || scale_num > 16) {
        PyErr_Format(PyExc_ValueError, "bad window %dx%d at (%d, %d) or scale %d/8",
                     out_h, out_w, top, left, scale_num);
        goto end;
    }
    if (!PyBuffer_IsContiguous(&dst, 'C') || dst.readonly ||
        dst.len != (Py_ssize_t)out_h * out_w * 3) {
        PyErr_Format(PyExc_ValueError, "out must be a writable contiguous buffer of %d x %d x 3"
                     " bytes (got %zd)", out_h, out_w, dst.len);
        goto end;
    }
    Job job = {src.buf, (size_t)src.len, dst.buf, (JDIMENSION)top, (JDIMENSION)left,
               (JDIMENSION)out_h, (JDIMENSION)out_w, scale_num, 0, 0, 0, ""};
    int ok;
    Py_BEGIN_ALLOW_THREADS
    ok = run(&job);
    Py_END_ALLOW_THREADS
    if (job.outside)
        PyErr_Format(PyExc_ValueError, "a %dx%d window at x=%d, y=%d is outside the %ux%u "
                     "frame", out_w, out_h, left, top, job.width, job.height);
    else if (!ok)
        PyErr_SetString(PyExc_ValueError, job.message);
    else
        result = Py_BuildValue("(II)", job.height, job.width);
end:
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    return result;
}

static PyMethodDef methods[] = {
    {"decode", decode, METH_VARARGS,
     "decode(data, out, top, left, out_h, out_w, scale_num) -> (height, width)\n\n"
     "Decode the window [top:top+out_h, left:left+out_w] of the JPEG `data`, at scale_num/8 of"
     "\nits size, as RGB into the writable buffer `out`; the decoded frame's size is returned."},
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
