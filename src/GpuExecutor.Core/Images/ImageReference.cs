using System.Text.RegularExpressions;

namespace GpuExecutor.Images;

/// <summary>Docker image references: validation and the equivalent spellings of one reference.</summary>
public static partial class ImageReference
{
    // Docker's reference grammar (distribution/reference), narrowed to what a registry accepts.
    [GeneratedRegex(
        @"^(?:(?<registry>[a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?(?::[0-9]{1,5})?)/)?" +
        @"(?<path>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)" +
        @"(?::(?<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?" +
        @"(?:@(?<digest>sha256:[a-f0-9]{64}))?$")]
    private static partial Regex Grammar();

    public static bool IsValid(string reference) => reference.Length <= 512 && Grammar().IsMatch(reference);

    /// <summary>
    /// The reference with ":latest" added when it has neither tag nor digest. The pull API takes
    /// a bare name to mean every tag, unlike the CLI, so a pull always names one.
    /// </summary>
    public static string WithDefaultTag(string reference)
    {
        var match = Grammar().Match(reference);
        return match.Success && !match.Groups["tag"].Success && !match.Groups["digest"].Success
            ? reference + ":latest"
            : reference;
    }

    /// <summary>
    /// The spellings Docker treats as the same image: as written, with the implied ":latest", and
    /// fully qualified on Docker Hub ("ubuntu" is "docker.io/library/ubuntu:latest"). The allowlist
    /// admits an image when any of them matches, so an admin can write patterns in either style.
    /// </summary>
    public static IReadOnlyList<string> EquivalentForms(string reference)
    {
        var match = Grammar().Match(reference);
        if (!match.Success)
            return [reference];

        var forms = new List<string> { reference };
        var hasTagOrDigest = match.Groups["tag"].Success || match.Groups["digest"].Success;
        var suffix = reference[(match.Groups["path"].Index + match.Groups["path"].Length)..];
        if (!hasTagOrDigest)
            suffix = ":latest";

        var registry = match.Groups["registry"].Success ? match.Groups["registry"].Value : null;
        var path = match.Groups["path"].Value;
        // Only a first component with a dot or port, or "localhost", is a registry; otherwise
        // it is a Docker Hub namespace ("nvidia/cuda").
        var isRegistry = registry is not null && (registry.Contains('.') || registry.Contains(':') || registry == "localhost");
        if (registry is not null && !isRegistry)
        {
            path = registry + "/" + path;
            registry = null;
        }

        var qualified = registry is null
            ? $"docker.io/{(path.Contains('/') ? path : "library/" + path)}{suffix}"
            : $"{registry}/{path}{suffix}";
        var written = reference[..(match.Groups["path"].Index + match.Groups["path"].Length)] + suffix;
        foreach (var form in new[] { written, qualified })
        {
            if (!forms.Contains(form))
                forms.Add(form);
        }
        return forms;
    }
}
