namespace GpuExecutor.JobLog;

/// <summary>
/// Text read back from the shared store (a bad generation's reason, a segment's story) on its
/// way to a job log or an admin's terminal: anyone with the store's credentials could have
/// written it, so control characters (escape sequences, carriage returns, newlines) become '?'
/// and it is cut to a bounded length.
/// </summary>
public static class Printable
{
    public static string Of(string? text, int longest = 500)
    {
        if (string.IsNullOrEmpty(text))
            return "";
        var cut = text.Length > longest ? text[..longest] + "…" : text;
        return string.Create(cut.Length, cut, (span, source) =>
        {
            for (var index = 0; index < source.Length; index++)
                span[index] = char.IsControl(source[index]) ? '?' : source[index];
        });
    }
}
