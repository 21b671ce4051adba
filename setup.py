"""The one compiled part: DATA.DECODER libjpeg (slowfast_dist/data/_libjpeg.c), built against the
system's libjpeg-turbo (Debian/Ubuntu: libjpeg-turbo8-dev or libjpeg62-turbo-dev). Optional:
where it cannot be built the install goes on and DATA.DECODER auto uses simplejpeg."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("slowfast_dist.data._libjpeg", ["slowfast_dist/data/_libjpeg.c"],
                             libraries=["jpeg"], extra_compile_args=["-O2", "-Wall"],
                             optional=True)])
