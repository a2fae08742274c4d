using System.Text;
using System.Text.RegularExpressions;

namespace GpuExecutor.Images;

/// <summary>
/// Which images jobs may run. Patterns are globs over the image reference: '*' and '?' stay within
/// one path component, '**' crosses '/'. An empty list admits every image, as GitLab's own
/// allowed_images does.
/// </summary>
public sealed class ImageAllowlist
{
    private readonly IReadOnlyList<(string Pattern, Regex Matcher)> _rules;

    public ImageAllowlist(IReadOnlyList<string> patterns)
    {
        _rules = patterns.Select(pattern => (pattern, ToRegex(pattern))).ToList();
    }

    public IReadOnlyList<string> Patterns => _rules.Select(rule => rule.Pattern).ToList();

    public static bool IsValidPattern(string pattern) =>
        pattern.Length is > 0 and <= 512 && pattern.All(c => char.IsAsciiLetterOrDigit(c) || "./:_-@*?".Contains(c));

    /// <summary>The first pattern admitting the image, or null when none does.</summary>
    public string? FindAdmittingPattern(string image)
    {
        if (_rules.Count == 0)
            return "(no images.allowed list: every image is admitted)";
        var forms = ImageReference.EquivalentForms(image);
        foreach (var (pattern, matcher) in _rules)
        {
            if (forms.Any(matcher.IsMatch))
                return pattern;
        }
        return null;
    }

    private static Regex ToRegex(string pattern)
    {
        var regex = new StringBuilder("^");
        for (var index = 0; index < pattern.Length; index++)
        {
            var c = pattern[index];
            if (c == '*' && index + 1 < pattern.Length && pattern[index + 1] == '*')
            {
                regex.Append(".*");
                index++;
            }
            else if (c == '*')
                regex.Append("[^/]*");
            else if (c == '?')
                regex.Append("[^/]");
            else
                regex.Append(Regex.Escape(c.ToString()));
        }
        regex.Append('$');
        return new Regex(regex.ToString(), RegexOptions.CultureInvariant);
    }
}
