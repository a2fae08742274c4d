using GpuExecutor.Images;

namespace GpuExecutor.Tests;

public sealed class ImageTests
{
    [Theory]
    [InlineData("ubuntu")]
    [InlineData("ubuntu:24.04")]
    [InlineData("nvcr.io/nvidia/pytorch:24.05-py3")]
    [InlineData("localhost:5000/team/trainer:v1")]
    [InlineData("pytorch/pytorch@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")]
    public void Valid_references_are_accepted(string reference) => Assert.True(ImageReference.IsValid(reference));

    [Theory]
    [InlineData("")]
    [InlineData("Ubuntu")]
    [InlineData("ubuntu:24.04; rm -rf /")]
    [InlineData("ubuntu $(id)")]
    [InlineData("../etc/passwd")]
    [InlineData("ubuntu:")]
    public void Invalid_references_are_refused(string reference) => Assert.False(ImageReference.IsValid(reference));

    [Theory]
    [InlineData("ubuntu", "ubuntu:latest")]
    [InlineData("ubuntu:24.04", "ubuntu:24.04")]
    [InlineData("localhost:5000/trainer", "localhost:5000/trainer:latest")]
    public void A_pull_always_names_a_tag(string reference, string expected) =>
        Assert.Equal(expected, ImageReference.WithDefaultTag(reference));

    [Theory]
    [InlineData("nvcr.io/nvidia/**", "nvcr.io/nvidia/pytorch:24.05-py3", true)]
    [InlineData("nvcr.io/nvidia/*", "nvcr.io/nvidia/pytorch:24.05-py3", true)]
    [InlineData("nvcr.io/nvidia/*", "nvcr.io/nvidia/clara/monai:1", false)]
    [InlineData("nvcr.io/nvidia/**", "nvcr.io/nvidia/clara/monai:1", true)]
    [InlineData("nvcr.io/nvidia/**", "nvcr.io/nvidiaevil/x:1", false)]
    [InlineData("pytorch/pytorch:*", "pytorch/pytorch:2.3.0-cuda12.1-cudnn8-runtime", true)]
    [InlineData("pytorch/pytorch:*", "docker.io/pytorch/pytorch:2.3.0", true)]
    [InlineData("docker.io/library/ubuntu:*", "ubuntu", true)]
    [InlineData("ubuntu:24.04", "ubuntu:22.04", false)]
    [InlineData("ubuntu:2?.04", "ubuntu:22.04", true)]
    [InlineData("ubuntu:latest", "ubuntu", true)]
    [InlineData("docker.io/nvidia/cuda:*", "nvidia/cuda:12.4.1-runtime-ubuntu22.04", true)]
    public void Patterns_admit_exactly_the_images_they_describe(string pattern, string image, bool admitted)
    {
        var allowlist = new ImageAllowlist([pattern]);

        Assert.Equal(admitted ? pattern : null, allowlist.FindAdmittingPattern(image));
    }

    [Fact]
    public void An_empty_allowlist_admits_every_image_as_gitlab_does() =>
        Assert.NotNull(new ImageAllowlist([]).FindAdmittingPattern("anything/at:all"));
}
