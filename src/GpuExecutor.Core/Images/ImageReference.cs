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

    public static bool IsValid(string reference)
    {
        if (reference.Length > 512)
            return false;
        var match = Grammar().Match(reference);
        if (!match.Success)
            return false;
        // A first component that is not a registry host is a lowercase repository namespace.
        var first = match.Groups["registry"];
        return !first.Success || IsRegistryHost(first.Value) || first.Value == first.Value.ToLowerInvariant();
    }

    /// <summary>Only a first component with a dot or a port, or "localhost", names a registry.</summary>
    private static bool IsRegistryHost(string component) =>
        component.Contains('.') || component.Contains(':') || component == "localhost";

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
        if (registry is not null && !IsRegistryHost(registry))
        {
            // "nvidia/cuda": a Docker Hub namespace, not a registry.
            path = registry + "/" + path;
            registry = null;
        }

        string qualified, familiar;
        if (registry is null or "docker.io" or "index.docker.io" or "registry-1.docker.io")
        {
            var hubPath = path.Contains('/') ? path : "library/" + path;
            qualified = $"docker.io/{hubPath}{suffix}";
            familiar = (hubPath.StartsWith("library/", StringComparison.Ordinal) ? hubPath["library/".Length..] : hubPath) + suffix;
        }
        else
        {
            qualified = familiar = $"{registry}/{path}{suffix}";
        }

        var written = reference[..(match.Groups["path"].Index + match.Groups["path"].Length)] + suffix;
        foreach (var form in new[] { written, familiar, qualified })
        {
            if (!forms.Contains(form))
                forms.Add(form);
        }
        return forms;
    }
}
