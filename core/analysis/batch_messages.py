"""Why a batch upload is refused, as core's sentences with ids (core/messages.py): the Batch page shows them in
the analyst's language; the English is what batch_input.py always said. Sizes arrive formatted ("3.0 MB")."""
from __future__ import annotations

from core.messages import MessageText

NOT_A_ZIP = MessageText("batch.not_a_zip",
                        "“{name}” is not a zip archive, or it is damaged. Upload images or a .zip of images.")
TOO_MANY_NAMES = MessageText("batch.too_many_names", "“{name}” holds {count} names; a batch zip may hold at most {limit}.")
_SPLIT = "; a batch takes at most {limit} images (setting batch_max_files). Split it into several batches. " \
         "Nothing was unpacked."
ZIP_TOO_MANY_IMAGES = MessageText("batch.zip_too_many_images", "“{name}” holds {count} images" + _SPLIT)
ZIP_TOO_MANY_WITH_EARLIER = MessageText("batch.zip_too_many_images_with_earlier",
                                        "“{name}” holds {count} images (plus {earlier} from the other uploads)" + _SPLIT)
UNSAFE_NAME = MessageText("batch.unsafe_name", "“{name}” contains the unsafe name “{member}”, which points outside its "
                                               "folder. The whole zip was refused and nothing was extracted.")
WOULD_UNPACK = MessageText("batch.would_unpack", "“{name}” would unpack to {size}; the limit is {limit}. It may be a "
                                                 "zip bomb; nothing was unpacked.")
RATIO = MessageText("batch.ratio", "“{name}” claims to unpack {size} from {packed} (more than {ratio:.0f}×): a zip "
                                   "bomb. Nothing was unpacked.")
MEMBER_RATIO = MessageText("batch.member_ratio", "“{name}”: “{member}” claims to unpack {size} from {packed} bytes "
                                                 "(more than {ratio:.0f}×): a zip bomb. Nothing was unpacked.")
MEMBER_OVERFLOW = MessageText("batch.member_overflow", "“{name}”: “{member}” holds more than it declares: a zip bomb. "
                                                       "Nothing was kept.")
UNPACKS_MORE = MessageText("batch.unpacks_more", "“{name}” unpacks to more than {limit}.")
ZIP_OVER_FILES = MessageText("batch.zip_over_files", "“{name}” holds more than {limit} images; a batch takes at most "
                                                     "{limit}. Split it into several batches.")
NO_UPLOADS = MessageText("batch.no_uploads", "Upload images, or one zip of images, to start a batch.")
UPLOADS_TOO_BIG = MessageText("batch.uploads_too_big", "The uploads come to {size}; a batch takes at most {limit}.")
UPLOADS_OVER_FILES = MessageText("batch.uploads_over_files", "The uploads hold more than {limit} images; a batch takes "
                                                             "at most {limit}. Split it into several batches.")
NO_IMAGES = MessageText("batch.no_images", "No images were found: {listed}.")
