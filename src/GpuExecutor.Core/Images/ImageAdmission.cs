using GpuExecutor.Outcomes;
using GpuExecutor.Protocol;

namespace GpuExecutor.Images;

/// <summary>Which image a job runs, whether this runner admits it, and getting it onto the host.</summary>
public static class ImageAdmission
{
    /// <summary>The job's image from the trusted payload (not CUSTOM_ENV_CI_JOB_IMAGE), else images.default; refused unless images.allowed admits it.</summary>
    public static string Resolve(JobPayload payload, string defaultImage, IReadOnlyList<string> allowed)
    {
        var image = payload.Image?.Name is { Length: > 0 } named ? named : defaultImage;
        if (image.Length == 0)
            throw new BuildFailureException("the job names no image and the runner has no images.default; add `image:` to the job.");
        if (!ImageReference.IsValid(image))
            throw new BuildFailureException($"'{image}' is not a valid image reference.");

        var allowlist = new ImageAllowlist(allowed);
        if (allowlist.FindAdmittingPattern(image) is null)
            throw new BuildFailureException(
                $"image '{image}' is not allowed on this runner: it matches no pattern of images.allowed " +
                $"[{string.Join(", ", allowlist.Patterns.Select(pattern => $"\"{pattern}\""))}]. Use an allowed image or ask the runner's admin to add a pattern.");
        return image;
    }

    /// <summary>Pulls the image per images.pull_policy unless the host has it.</summary>
    public static async Task EnsureAsync(IImageStore driver, string image, PullPolicy policy, bool jobChoseIt, TextWriter log, CancellationToken cancellationToken)
    {
        if (policy != PullPolicy.Always && await driver.ImageExistsAsync(image, cancellationToken))
            return;
        if (policy == PullPolicy.Never)
            throw Fault(jobChoseIt, $"image '{image}' is not on this host and images.pull_policy is \"never\".");

        log.WriteLine($"Pulling {image} (images.pull_policy = \"{(policy == PullPolicy.Always ? "always" : "if-not-present")}\")...");
        try
        {
            await driver.PullImageAsync(image, line => log.WriteLine($"  {line}"), cancellationToken);
        }
        catch (ImageUnavailableException error)
        {
            throw Fault(jobChoseIt, error.Message, error);
        }
    }

    /// <summary>
    /// The job chose its image, so a problem with it is its author's to fix (a build failure, not
    /// retried); the helper image is the admin's (a system failure).
    /// </summary>
    public static Exception Fault(bool jobChoseIt, string message, Exception? inner = null) =>
        jobChoseIt ? new BuildFailureException(message, inner: inner) : new SystemFailureException(message, inner);
}
