// The Uppy an application would bundle: core, the Dashboard UI and the S3 uploader, with their
// CSS (esbuild writes it next to the bundle, as dist/uppy.css). pages/uppy.html imports these.
import AwsS3 from "@uppy/aws-s3";
import Uppy from "@uppy/core";
import Dashboard from "@uppy/dashboard";

import "@uppy/core/css/style.min.css";
import "@uppy/dashboard/css/style.min.css";

export { AwsS3, Dashboard, Uppy };
