"""Short clips from an approved image: Wan image-to-video, MP4 encoding, the clip job."""
