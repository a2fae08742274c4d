using GpuExecutor.JobLog;

namespace GpuExecutor.Tests;

/// <summary>Text from the shared store on its way to a log: no escape sequence or line break gets through, and it is bounded.</summary>
public sealed class PrintableTests
{
    [Theory]
    [InlineData("blob missing", "blob missing")]
    [InlineData("red\u001b[31m text", "red?[31m text")]
    [InlineData("two\nlines\r", "two?lines?")]
    [InlineData(null, "")]
    public void Control_characters_become_question_marks(string? text, string printed) =>
        Assert.Equal(printed, Printable.Of(text));

    [Fact]
    public void Long_text_is_cut_and_says_so() =>
        Assert.Equal(new string('x', 10) + "…", Printable.Of(new string('x', 50), longest: 10));
}
